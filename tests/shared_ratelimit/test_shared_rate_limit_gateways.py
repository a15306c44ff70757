"""Two gateway processes of one deployment share their rate limits through Redis.

Both run ``strongroom serve`` on the same data dir (the install's secrets), the
same fresh PostgreSQL database and the same Redis, under a key prefix of this
test's own. Loaded at once from many threads with the same API key:

1. The requests both let through add up to the configured burst (within 10%),
   not to twice the burst as two in-process limiters would allow; both gateways
   answered a fair share of the load, and refused requests are 429s with the
   rate-limit headers and Retry-After.
2. Neither gateway fell back to its in-process limiter.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import httpx
import pytest
import redis
from shared_ratelimit_support import REDIS_URL, fallback_total, redis_unreachable

from support import AUTH, TOKENIZED_URL, GatewayProcess, gateway_starter
from support_cli import cli_ok
from support_database import create_database, drop_databases

pytestmark = pytest.mark.slow

#: 300 requests per 100-second window: nothing refills while the test runs, so
#: the shared count is exactly what both gateways let through.
BURST: Final = 300
RPS: Final = 3.0
TOLERANCE: Final = 0.10
#: Enough requests to spend the burst three times over, from this many threads.
REQUESTS: Final = 3 * BURST
WORKERS: Final = 12
DEADLINE_SECONDS: Final = 60.0


@dataclass(frozen=True)
class Deployment:
    a: GatewayProcess
    b: GatewayProcess
    prefix: str


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A fresh key prefix on the real Redis; its keys are deleted afterwards."""
    prefix = f"strongroom-test:{uuid.uuid4().hex}:"
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=5)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        client.close()
        redis_unreachable(exc)
    try:
        yield prefix
    finally:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
def deployment(tmp_path: Path, redis_prefix: str) -> Iterator[Deployment]:
    url = asyncio.run(create_database())
    try:
        data_dir = tmp_path / "data"
        env = {
            "STRONGROOM_DATABASE_URL": url,
            "STRONGROOM_REDIS_URL": REDIS_URL,
            "STRONGROOM_REDIS_RATELIMIT_PREFIX": redis_prefix,
            "STRONGROOM_REDIS_VELOCITY_PREFIX": redis_prefix + "velocity:",
            "STRONGROOM_REDIS_SEEN_PREFIX": redis_prefix + "seen:",
            "STRONGROOM_RATELIMIT_BURST": str(BURST),
            "STRONGROOM_RATELIMIT_RPS": str(RPS),
            "STRONGROOM_ACCESS_LOG": "false",
        }
        data = ("--data-dir", str(data_dir))
        cli_ok("db", "upgrade", *data, env=env)
        # The install's secrets are made once, here; both gateways then read them.
        cli_ok("init", *data, env=env)
        with gateway_starter(data_dir) as start:
            yield Deployment(start(env=env), start(env=env), redis_prefix)
    finally:
        asyncio.run(drop_databases([url]))


@dataclass(frozen=True)
class Answer:
    gateway: str
    status: int
    headers: httpx.Headers


def load(deployment: Deployment) -> list[Answer]:
    """``REQUESTS`` reads with the same key, spread over both gateways from
    ``WORKERS`` threads; stops early at ``DEADLINE_SECONDS``."""
    tickets = itertools.count()
    lock = threading.Lock()
    deadline = time.monotonic() + DEADLINE_SECONDS
    answers: list[Answer] = []

    def worker(index: int) -> None:
        name, gateway = ("a", deployment.a) if index % 2 == 0 else ("b", deployment.b)
        with gateway.client() as http:
            while time.monotonic() < deadline:
                with lock:
                    if next(tickets) >= REQUESTS:
                        return
                response = http.get(TOKENIZED_URL, params={"limit": 1}, headers=AUTH)
                with lock:
                    answers.append(Answer(name, response.status_code, response.headers))

    with ThreadPoolExecutor(WORKERS) as pool:
        for future in [pool.submit(worker, index) for index in range(WORKERS)]:
            future.result()
    return answers


def test_two_gateways_let_through_one_shared_burst(deployment: Deployment) -> None:
    answers = load(deployment)

    assert len(answers) == REQUESTS, "the load did not finish within the deadline"
    statuses = Counter(answer.status for answer in answers)
    assert set(statuses) <= {200, 429}, statuses
    allowed = statuses[200]
    assert abs(allowed - BURST) <= TOLERANCE * BURST, (
        f"{allowed} requests let through across both gateways; the limit is {BURST}"
    )
    per_gateway = Counter(answer.gateway for answer in answers)
    assert min(per_gateway.values()) >= REQUESTS // 4, per_gateway
    allowed_by = Counter(answer.gateway for answer in answers if answer.status == 200)
    assert set(allowed_by) == {"a", "b"}, allowed_by
    for answer in answers:
        assert answer.headers["x-ratelimit-limit"] == str(BURST)
        if answer.status == 429:
            assert answer.headers["x-ratelimit-remaining"] == "0"
            assert int(answer.headers["retry-after"]) >= 1
    for gateway in (deployment.a, deployment.b):
        with gateway.client() as http:
            assert fallback_total(http.get("/metrics").text) == 0
