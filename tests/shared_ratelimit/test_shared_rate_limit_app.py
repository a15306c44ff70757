"""A gateway configured with ``STRONGROOM_REDIS_URL`` limits through Redis, and keeps
limiting when Redis is gone.

1. With Redis up, per-key limits are counted in Redis under
   ``STRONGROOM_REDIS_RATELIMIT_PREFIX``, the X-RateLimit-* headers count down,
   the 429 past the burst carries Retry-After, and nothing falls back; so are
   the failed-authentication limit per client IP and the detokenization limit.
2. With Redis unreachable, requests are still served and still limited with
   the same limits and headers, and ``strongroom_ratelimit_fallback_total``
   counts the checks answered in process.
"""

from __future__ import annotations

import time
from pathlib import Path

from redis.asyncio import Redis
from shared_ratelimit_support import REDIS_URL, fallback_total

from support import AUTH, TOKENIZED_URL, free_port
from support_app import InProcessGateway, make_settings, serving
from support_problems import assert_problem


async def test_a_gateway_on_redis_counts_its_limits_there(
    tmp_path: Path, redis_client: Redis, redis_prefix: str
) -> None:
    settings = make_settings(
        tmp_path,
        redis_url=REDIS_URL,
        redis_ratelimit_prefix=redis_prefix,
        redis_velocity_prefix=redis_prefix + "velocity:",
        redis_seen_prefix=redis_prefix + "seen:",
        ratelimit_burst=3,
        ratelimit_rps=0.1,
    )
    async with serving(settings) as (_, http):
        answers = [await http.get(TOKENIZED_URL, headers=AUTH) for _ in range(4)]
        metrics = (await http.get("/metrics")).text
    stored = [key.decode() async for key in redis_client.scan_iter(match=redis_prefix + "*")]

    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    assert [r.headers["x-ratelimit-remaining"] for r in answers] == ["2", "1", "0", "0"]
    assert {r.headers["x-ratelimit-limit"] for r in answers} == {"3"}
    assert int(answers[-1].headers["retry-after"]) >= 1
    assert int(answers[-1].headers["x-ratelimit-reset"]) >= int(time.time())
    assert_problem(answers[-1], 429, "rate_limited")
    # The key's bucket and the tenant's, each under the configured prefix.
    assert any("/key:" in key for key in stored)
    assert any("/tenant:" in key for key in stored)
    assert fallback_total(metrics) == 0


async def test_the_ip_and_detokenize_limits_are_counted_in_redis_too(
    tmp_path: Path, redis_client: Redis, redis_prefix: str
) -> None:
    settings = make_settings(
        tmp_path,
        redis_url=REDIS_URL,
        redis_ratelimit_prefix=redis_prefix,
        redis_velocity_prefix=redis_prefix + "velocity:",
        redis_seen_prefix=redis_prefix + "seen:",
        detokenize_rps=0.01,
        detokenize_burst=3,
    )
    wrong = {"Authorization": "Bearer wrong-key-0000000000"}
    async with serving(settings) as (app, http):
        gateway = InProcessGateway(app, http)
        admin = await gateway.key(await gateway.tenant(), "admin")
        headers = {"Authorization": f"Bearer {admin.secret}"}
        guesses = [
            await http.post(
                "/v1/tokens/detokenize", json={"token": f"tok_{n:024d}"}, headers=headers
            )
            for n in range(4)
        ]
        async with gateway.peer("203.0.113.7") as stranger:
            refused = await stranger.get(TOKENIZED_URL, headers=wrong)
        metrics = (await http.get("/metrics")).text
    stored = [key.decode() async for key in redis_client.scan_iter(match=redis_prefix + "*")]

    assert [r.status_code for r in guesses] == [404, 404, 404, 429]
    assert refused.status_code == 401
    assert any("/detokenize:" in key for key in stored)
    assert any("/ip:203.0.113.7/" in key for key in stored)
    assert fallback_total(metrics) == 0


async def test_a_gateway_whose_redis_is_unreachable_still_limits_and_counts_the_fallback(
    tmp_path: Path,
) -> None:
    settings = make_settings(
        tmp_path,
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        ratelimit_burst=3,
        ratelimit_rps=0.1,
    )
    async with serving(settings) as (_, http):
        started = time.monotonic()
        answers = [await http.get(TOKENIZED_URL, headers=AUTH) for _ in range(4)]
        took = time.monotonic() - started
        metrics = (await http.get("/metrics")).text

    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    assert [r.headers["x-ratelimit-remaining"] for r in answers] == ["2", "1", "0", "0"]
    assert {r.headers["x-ratelimit-limit"] for r in answers} == {"3"}
    assert_problem(answers[-1], 429, "rate_limited")
    assert took < 2.0
    # Each request checks its key, and each admitted one its tenant too.
    assert fallback_total(metrics) >= len(answers)
