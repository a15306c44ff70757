"""Guessing keys gets nowhere and learns nothing.

1. Failed attempts from one IP are limited: past the budget the IP gets 429 with
   ``Retry-After``, and then even a valid key from that IP is not checked; other
   IPs are unaffected.
2. Every refusal of a presented key has the same 401 body: an unknown key id with
   a valid checksum, a known key id with the wrong secret, a bad checksum, a
   revoked key and an expired key differ only in ``request_id``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import httpx
from tenancy_support import Harness, assert_unauthorized, without_request_id

from strongroom.domain.access import Role
from strongroom.domain.api_keys import BASE62, CHECKSUM_LENGTH, checksum
from support import bearer
from support_problems import assert_problem

MakeHarness = Callable[..., AbstractAsyncContextManager[Harness]]
GUESSER = "127.0.0.9"
MAX_ATTEMPTS = 200


def random_chars(count: int) -> str:
    return "".join(secrets.choice(BASE62) for _ in range(count))


def well_formed(prefix: str, rest_length: int) -> str:
    """``prefix`` + random characters up to 32 after ``sr_live_``, with a valid checksum."""
    body = prefix + random_chars(rest_length)
    assert len(body) == len("sr_live_") + 32
    return body + checksum(body)


def wrong_secret_for(key: str) -> str:
    """Same mode and key id (first 12 random characters), other secret, valid checksum."""
    head = key[: len("sr_live_") + 12]
    for _ in range(100):
        candidate = well_formed(head, 20)
        if candidate != key:
            return candidate
    raise AssertionError("could not draw a different secret")


def as_test_mode(key: str) -> str:
    """The same random part as an ``sr_test_`` key, with its checksum."""
    body = "sr_test_" + key[len("sr_live_") : -CHECKSUM_LENGTH]
    return body + checksum(body)


async def test_failed_attempts_from_one_ip_reach_429_with_retry_after(
    make_harness: MakeHarness,
) -> None:
    # The shipped failed-attempt budget (STRONGROOM_IP_RATELIMIT_RPS/_BURST defaults).
    async with make_harness(ip_ratelimit_rps=5.0, ip_ratelimit_burst=20) as harness:
        tenant = await harness.tenant()
        valid = await harness.key(tenant, Role.VIEWER)
        statuses: list[int] = []
        throttled: httpx.Response | None = None
        async with harness.peer(GUESSER) as guesser:
            for _ in range(MAX_ATTEMPTS):
                response = await guesser.get(
                    "/v1/usage", headers=bearer(well_formed("sr_live_", 32))
                )
                statuses.append(response.status_code)
                if response.status_code == 429:
                    throttled = response
                    break
                assert_unauthorized(response)
            assert throttled is not None, f"no 429 after {MAX_ATTEMPTS} wrong keys"
            assert_problem(throttled, 429, "rate_limited")
            retry_after = throttled.headers["retry-after"]
            assert retry_after.isdigit()
            assert int(retry_after) >= 1
            assert 20 <= len(statuses) - 1 <= 40, statuses

            # Over budget, the IP is not even checked: a valid key gets 429 too.
            blocked = await guesser.get("/v1/usage", headers=bearer(valid.secret))
            assert_problem(blocked, 429, "rate_limited")
            assert "retry-after" in blocked.headers

        async with harness.peer("127.0.0.10") as bystander:
            response = await bystander.get("/v1/usage", headers=bearer(valid.secret))
            assert response.status_code == 200, response.text


async def test_successful_requests_do_not_spend_the_failed_attempt_budget(
    make_harness: MakeHarness,
) -> None:
    async with make_harness(ip_ratelimit_rps=0.01, ip_ratelimit_burst=3) as harness:
        valid = await harness.key(await harness.tenant(), Role.VIEWER)
        async with harness.peer(GUESSER) as client:
            for _ in range(10):
                response = await client.get("/v1/usage", headers=bearer(valid.secret))
                assert response.status_code == 200, response.text


async def test_every_refused_key_gets_the_same_401(harness: Harness) -> None:
    tenant = await harness.tenant()
    known = await harness.key(tenant, Role.VIEWER)
    revoked = await harness.key(tenant, Role.VIEWER)
    await harness.state.keys.revoke(tenant.id, revoked.record.id)
    expired = await harness.key(tenant, Role.VIEWER)
    await harness.state.keys.rotate(tenant.id, expired.record.id, grace_seconds=0, granted_by=None)
    assert (await harness.http.get("/v1/usage", headers=bearer(known.secret))).status_code == 200

    wrong_secret = wrong_secret_for(known.secret)
    bad_checksum = known.secret[:-CHECKSUM_LENGTH] + (
        "000000" if not known.secret.endswith("000000") else "111111"
    )
    presented = {
        "unknown id, valid checksum": well_formed("sr_live_", 32),
        "known id, wrong secret": wrong_secret,
        "known id, wrong secret, test mode": as_test_mode(wrong_secret),
        "bad checksum": bad_checksum,
        "revoked": revoked.secret,
        "expired": expired.secret,
        "not a managed key": "definitely-not-a-key-0123456789",
    }
    responses = {}
    for label, key in presented.items():
        response = await harness.http.get("/v1/usage", headers=bearer(key))
        assert_unauthorized(response)
        responses[label] = response

    reference = responses["unknown id, valid checksum"]
    for label, response in responses.items():
        assert without_request_id(response) == without_request_id(reference), label
        for header in ("www-authenticate", "content-type", "content-length"):
            assert response.headers[header] == reference.headers[header], (label, header)
    assert len({r.json()["request_id"] for r in responses.values()}) == len(responses)
