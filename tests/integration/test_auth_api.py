"""Bearer-key authentication on every ``/v1/`` route.

1. A missing, malformed, wrong or revoked key gets 401 problem+json with
   ``WWW-Authenticate: Bearer``, the same answer whatever the reason.
2. Every configured key works; a revoked key fails even while still listed as active.
3. ``/health``, ``/ready`` and ``/metrics`` need no key.
4. ``strongroom_auth_denied_total{reason}`` counts refusals by reason, and no label
   holds a key.
5. Failed attempts from one IP are limited: past ``ip_ratelimit_burst`` the IP gets 429
   with ``Retry-After``, and then even a valid key from that IP gets 429 until the
   window passes, while other IPs are unaffected.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from integration_support import Failures, metric_samples, metric_value, stored_ids
from pydantic import SecretStr

from support import AUTH, KEY, OTHER_KEY, TOKENIZED_URL, card_free_event
from support_app import peer
from support_problems import assert_problem

WRONG_KEY = "wrong-key-5c1e3a7b9d"
REVOKED_KEY = "revoked-key-0123456789"

BAD_AUTHORIZATIONS: list[tuple[str, str | None]] = [
    ("missing", None),
    ("empty", ""),
    ("basic-scheme", "Basic dGVzdDp0ZXN0"),
    ("token-scheme", f"Token {KEY}"),
    ("key-without-scheme", KEY),
    ("scheme-without-key", "Bearer"),
    ("scheme-and-blank", "Bearer    "),
    ("wrong-key", f"Bearer {WRONG_KEY}"),
    ("key-with-suffix", f"Bearer {KEY}x"),
    ("key-prefix", f"Bearer {KEY[:-1]}"),
    ("key-case-changed", f"Bearer {KEY.upper()}"),
    ("two-keys", f"Bearer {KEY} {OTHER_KEY}"),
    ("over-long", "Bearer " + "k" * 600),
]

# (method, path, json body) for every authenticated route.
ROUTES: list[tuple[str, str, Any]] = [
    ("POST", "/v1/events", None),
    ("POST", "/v1/events/payment_exhaust", None),
    ("GET", TOKENIZED_URL, None),
    ("POST", f"{TOKENIZED_URL}/groups/g1/read", {"consumer": "c1"}),
    ("POST", f"{TOKENIZED_URL}/groups/g1/ack", {"offsets": [0]}),
    ("GET", f"{TOKENIZED_URL}/dead-letters", None),
    ("POST", f"{TOKENIZED_URL}/groups/g1/dead-letters/replay", {}),
    ("GET", "/v1/no-such-route", None),
]


def headers_for(authorization: str | None) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    return headers


async def call(
    client: httpx.AsyncClient, method: str, path: str, body: Any, authorization: str | None
) -> httpx.Response:
    content = (
        json.dumps(body if body is not None else card_free_event()) if method == "POST" else None
    )
    return await client.request(method, path, content=content, headers=headers_for(authorization))


def assert_unauthorized(response: httpx.Response) -> dict[str, Any]:
    problem = assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")
    return problem


async def test_a_missing_or_bad_credential_gets_401_with_www_authenticate(
    client: httpx.AsyncClient,
) -> None:
    failures = Failures()
    for case, authorization in BAD_AUTHORIZATIONS:
        with failures.case(case):
            response = await call(client, "POST", "/v1/events", None, authorization)
            assert_unauthorized(response)
            assert "x-ratelimit-limit" not in response.headers
    failures.check()
    assert await stored_ids(client) == []


async def test_every_v1_route_requires_a_key(client: httpx.AsyncClient) -> None:
    failures = Failures()
    for method, path, body in ROUTES:
        with failures.case(f"{method} {path}"):
            assert_unauthorized(await call(client, method, path, body, None))
            assert_unauthorized(await call(client, method, path, body, f"Bearer {WRONG_KEY}"))
    failures.check()


async def test_the_refusal_is_the_same_whatever_the_reason(client: httpx.AsyncClient) -> None:
    answers = [
        await call(client, "GET", TOKENIZED_URL, None, authorization)
        for _, authorization in BAD_AUTHORIZATIONS
    ]

    shapes = {
        json.dumps({k: v for k, v in r.json().items() if k != "request_id"}, sort_keys=True)
        for r in answers
    }
    assert len(shapes) == 1, shapes
    assert {r.headers["www-authenticate"] for r in answers} == {
        answers[0].headers["www-authenticate"]
    }


@pytest.mark.parametrize("key", [KEY, OTHER_KEY])
async def test_each_configured_key_works(client: httpx.AsyncClient, key: str) -> None:
    body = card_free_event()

    written = await call(client, "POST", "/v1/events", body, f"Bearer {key}")
    read = await call(client, "GET", TOKENIZED_URL, None, f"Bearer {key}")

    assert written.status_code == 202, written.text
    assert read.status_code == 200
    assert [r["record"]["event_id"] for r in read.json()["data"]] == [body["event_id"]]


async def test_the_scheme_is_case_insensitive(client: httpx.AsyncClient) -> None:
    response = await call(client, "GET", TOKENIZED_URL, None, f"bearer {KEY}")

    assert response.status_code == 200, response.text


@pytest.fixture
async def revoking(serve: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway where REVOKED_KEY is listed as active and also revoked."""
    keys = (SecretStr(KEY), SecretStr(REVOKED_KEY))
    async with (
        serve(api_keys=keys, revoked_keys=(SecretStr(REVOKED_KEY),)) as app,
        peer(app) as http,
    ):
        yield http


async def test_a_revoked_key_is_refused_even_while_listed_as_active(
    revoking: httpx.AsyncClient,
) -> None:
    revoked = await call(revoking, "POST", "/v1/events", None, f"Bearer {REVOKED_KEY}")
    active = await call(revoking, "GET", TOKENIZED_URL, None, f"Bearer {KEY}")
    reasons = await metric_value(revoking, "strongroom_auth_denied_total", reason="revoked")

    assert_unauthorized(revoked)
    assert active.status_code == 200
    assert active.json()["data"] == []
    assert reasons == 1


@pytest.mark.parametrize("path", ["/health", "/ready", "/metrics"])
async def test_operational_endpoints_need_no_key(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)

    assert response.status_code == 200, response.text
    assert "www-authenticate" not in response.headers


async def test_operational_endpoints_ignore_a_bad_key(client: httpx.AsyncClient) -> None:
    response = await client.get("/health", headers={"Authorization": f"Bearer {WRONG_KEY}"})

    assert response.status_code == 200


async def test_auth_denied_total_counts_by_reason_and_labels_hold_no_key(
    revoking: httpx.AsyncClient,
) -> None:
    attempts = {
        "missing": [None],
        "malformed": ["Basic abc", f"Token {KEY}"],
        "unknown": [f"Bearer {WRONG_KEY}"] * 3,
        "revoked": [f"Bearer {REVOKED_KEY}"] * 2,
    }
    for tries in attempts.values():
        for authorization in tries:
            assert_unauthorized(await call(revoking, "GET", TOKENIZED_URL, None, authorization))
    accepted = await call(revoking, "GET", TOKENIZED_URL, None, f"Bearer {KEY}")
    samples = await metric_samples(revoking)
    text = (await revoking.get("/metrics")).text

    assert accepted.status_code == 200
    counted = {
        labels["reason"]: value
        for name, labels, value in samples
        if name == "strongroom_auth_denied_total"
    }
    assert counted == {reason: len(tries) for reason, tries in attempts.items()}
    for secret in (KEY, OTHER_KEY, WRONG_KEY, REVOKED_KEY):
        assert secret not in text
        assert all(secret not in value for _, labels, _ in samples for value in labels.values())


async def test_successful_requests_do_not_spend_the_failed_attempt_budget(serve: Any) -> None:
    async with serve(ip_ratelimit_burst=2, ip_ratelimit_rps=0.1) as app, peer(app) as http:
        answers = [await http.get(TOKENIZED_URL, headers=AUTH) for _ in range(10)]

    assert [r.status_code for r in answers] == [200] * 10


async def _start_of_window(window_seconds: float) -> None:
    """Wait for the next of the limiter's windows to begin.

    The sliding-window counter keeps one count per epoch-aligned window and weighs
    the previous window's count by how much of it still overlaps. Failures spent
    just before a boundary are therefore partly forgiven a moment later; started at
    a boundary, the failures and the locked calls have a whole window, plus a third
    of the next, before the IP may be let in, however slow the machine is.
    """
    await asyncio.sleep(window_seconds - time.time() % window_seconds + 0.01)


async def test_after_failures_even_a_valid_key_from_that_ip_gets_429_until_the_window_passes(
    serve: Any,
) -> None:
    async with (
        # A 3-second window (burst 3 at 1/s).
        serve(ip_ratelimit_burst=3, ip_ratelimit_rps=1) as app,
        peer(app, "10.1.1.1") as attacker,
        peer(app, "10.2.2.2") as bystander,
    ):
        await _start_of_window(3.0)
        wrong = {"Authorization": f"Bearer {WRONG_KEY}"}
        failures = [await attacker.get(TOKENIZED_URL, headers=wrong) for _ in range(3)]
        locked = await attacker.get(TOKENIZED_URL, headers=wrong)
        valid_while_locked = await attacker.get(TOKENIZED_URL, headers=AUTH)
        other_ip = await bystander.get(TOKENIZED_URL, headers=AUTH)
        limited = await metric_value(attacker, "strongroom_rate_limited_total", kind="ip")

        assert [r.status_code for r in failures] == [401, 401, 401]
        for response in (locked, valid_while_locked):
            assert_problem(response, 429, "rate_limited")
            retry_after = int(response.headers["retry-after"])
            assert 1 <= retry_after <= 3
        assert limited == 2
        assert other_ip.status_code == 200

        deadline = time.monotonic() + 8
        status = valid_while_locked.status_code
        while status == 429 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            status = (await attacker.get(TOKENIZED_URL, headers=AUTH)).status_code
        assert status == 200, "the IP stayed locked after its window passed"
