"""Managed API keys over ``/v1/keys``: create, show, list, rotate, revoke, expire.

1. ``POST /v1/keys`` answers 201 with the key's ``id`` and its secret ``key``
   (``sr_live_``/``sr_test_`` + 38 base62 characters), shown once: no later
   response, and no file in the data dir, holds the secret or any hash field.
2. ``GET /v1/keys`` pages with ``limit`` and ``next`` over every key of the tenant.
3. Rotation answers 201 with a new key; the old key works until its grace period
   ends (24 h by default, 0 = at once), then gets 401; a key is rotated only once.
4. ``DELETE`` revokes at once: the next request with the key is 401.
5. A key with a wrong checksum is refused before any lookup, with the same 401 as
   an unknown key.
6. ``expires_at`` must be an RFC 3339 time with an offset, in the future.
7. ``last_used_at`` is set once the gateway has flushed last-use times.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tenancy_support import (
    KEY_ID_PATTERN,
    KEY_PATTERN,
    Harness,
    assert_no_secret_material,
    assert_unauthorized,
    without_request_id,
)

from strongroom.domain.access import ROLE_SCOPES, Role
from strongroom.domain.api_keys import BASE62, checksum
from support import bearer, key_id_of, stored_contents
from support_problems import assert_problem


async def admin_of_new_tenant(harness: Harness) -> str:
    tenant = await harness.tenant()
    return (await harness.key(tenant, Role.ADMIN, name="admin")).secret


async def create_key(harness: Harness, admin: str, **body: Any) -> dict[str, Any]:
    response = await harness.http.post(
        "/v1/keys", json={"name": "made", "role": "operator", **body}, headers=bearer(admin)
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def works(harness: Harness, secret: str) -> bool:
    """True when the gateway accepts the key (200, or 403 if it lacks ``usage:read``)."""
    response = await harness.http.get("/v1/usage", headers=bearer(secret))
    if response.status_code == 401:
        assert_unauthorized(response)
        return False
    assert response.status_code in (200, 403), response.text
    return True


def flip_last(text: str) -> str:
    last = text[-1]
    return text[:-1] + (BASE62[(BASE62.index(last) + 1) % len(BASE62)])


async def test_create_returns_the_key_once_and_never_again(harness: Harness) -> None:
    admin = await admin_of_new_tenant(harness)
    created = await create_key(harness, admin, name="checkout service")

    secret = created["key"]
    assert KEY_PATTERN.match(secret), secret
    assert secret.startswith("sr_live_")
    assert KEY_ID_PATTERN.match(created["id"])
    assert created["id"] == key_id_of(secret)
    assert created["role"] == "operator"
    assert created["name"] == "checkout service"
    assert created["mode"] == "live"
    assert sorted(created["scopes"]) == sorted(s.value for s in ROLE_SCOPES[Role.OPERATOR])
    assert not [field for field in created if "hash" in field.lower()]
    assert await works(harness, secret)

    shown = await harness.http.get(f"/v1/keys/{created['id']}", headers=bearer(admin))
    assert shown.status_code == 200, shown.text
    assert shown.json()["id"] == created["id"]
    assert_no_secret_material(shown.json())
    assert secret not in shown.text

    listed = await harness.http.get("/v1/keys", headers=bearer(admin))
    assert listed.status_code == 200
    assert created["id"] in [view["id"] for view in listed.json()["data"]]
    assert_no_secret_material(listed.json()["data"])
    assert secret not in listed.text


async def test_the_secret_is_stored_nowhere_in_the_data_dir(harness: Harness) -> None:
    admin = await admin_of_new_tenant(harness)
    created = await create_key(harness, admin)
    await harness.state.keys.flush_last_used()
    data_dir: Path = harness.state.settings.data_dir
    stored = stored_contents(data_dir)
    assert stored
    for name, content in stored.items():
        assert created["key"].encode() not in content, name
        assert created["key"][8:].encode() not in content, name


async def test_list_pages_with_next_over_every_key_of_the_tenant(harness: Harness) -> None:
    admin = await admin_of_new_tenant(harness)
    made = {(await create_key(harness, admin, name=f"k{i}"))["id"] for i in range(5)}
    other_tenant = await harness.tenant()
    foreign = await harness.key(other_tenant, Role.ADMIN)

    seen: list[str] = []
    after: str | None = None
    for _ in range(20):
        params: dict[str, Any] = {"limit": 2}
        if after is not None:
            params["after"] = after
        response = await harness.http.get("/v1/keys", params=params, headers=bearer(admin))
        assert response.status_code == 200, response.text
        page = response.json()
        assert set(page) == {"data", "next"}
        assert len(page["data"]) <= 2
        seen.extend(view["id"] for view in page["data"])
        if page["next"] is None:
            break
        assert page["next"] == page["data"][-1]["id"]
        after = page["next"]
    else:
        pytest.fail("paging never ended")

    assert len(seen) == len(set(seen)), "a key was listed twice"
    assert seen == sorted(seen)
    assert set(seen) == made | {key_id_of(admin)}
    assert foreign.record.id not in seen


async def test_rotation_keeps_the_old_key_for_its_grace_period(harness: Harness) -> None:
    admin = await admin_of_new_tenant(harness)
    old = await create_key(harness, admin)
    rotated = await harness.http.post(
        f"/v1/keys/{old['id']}/rotate", json={"grace_period_seconds": 1}, headers=bearer(admin)
    )
    assert rotated.status_code == 201, rotated.text
    new = rotated.json()
    assert KEY_PATTERN.match(new["key"])
    assert new["id"] == key_id_of(new["key"])
    assert new["id"] != old["id"]
    assert (new["role"], new["scopes"], new["name"]) == (old["role"], old["scopes"], old["name"])

    assert await works(harness, old["key"])
    assert await works(harness, new["key"])
    shown = (await harness.http.get(f"/v1/keys/{old['id']}", headers=bearer(admin))).json()
    assert shown["replaced_by"] == new["id"]
    assert shown["expires_at"] is not None
    assert shown["expires_at"] <= time.time() + 1.5

    await asyncio.sleep(max(0.0, shown["expires_at"] - time.time()) + 0.1)
    assert not await works(harness, old["key"])
    assert await works(harness, new["key"])


async def test_rotation_with_zero_grace_ends_the_old_key_at_once(harness: Harness) -> None:
    admin = await admin_of_new_tenant(harness)
    old = await create_key(harness, admin)
    assert await works(harness, old["key"])  # cached in the gateway's key cache
    rotated = await harness.http.post(
        f"/v1/keys/{old['id']}/rotate", json={"grace_period_seconds": 0}, headers=bearer(admin)
    )
    assert rotated.status_code == 201, rotated.text
    assert not await works(harness, old["key"])
    assert await works(harness, rotated.json()["key"])


async def test_rotation_without_a_body_grants_a_day_of_grace(harness: Harness) -> None:
    admin = await admin_of_new_tenant(harness)
    old = await create_key(harness, admin)
    before = time.time()
    rotated = await harness.http.post(f"/v1/keys/{old['id']}/rotate", headers=bearer(admin))
    assert rotated.status_code == 201, rotated.text
    shown = (await harness.http.get(f"/v1/keys/{old['id']}", headers=bearer(admin))).json()
    assert before + 24 * 3600 - 5 <= shown["expires_at"] <= time.time() + 24 * 3600 + 5
    assert await works(harness, old["key"])


async def test_a_key_is_rotated_only_once(harness: Harness) -> None:
    admin = await admin_of_new_tenant(harness)
    old = await create_key(harness, admin)
    first = await harness.http.post(f"/v1/keys/{old['id']}/rotate", headers=bearer(admin))
    assert first.status_code == 201, first.text

    second = await harness.http.post(f"/v1/keys/{old['id']}/rotate", headers=bearer(admin))
    assert 400 <= second.status_code < 500, second.text
    assert "key" not in second.json()
    assert "rotated" in second.json()["detail"]
    listed = (await harness.http.get("/v1/keys", headers=bearer(admin))).json()["data"]
    assert len(listed) == 3, "the refused rotation stored a key"

    # The replacement can itself be rotated.
    again = await harness.http.post(f"/v1/keys/{first.json()['id']}/rotate", headers=bearer(admin))
    assert again.status_code == 201, again.text


async def test_revoke_is_immediate(harness: Harness) -> None:
    admin = await admin_of_new_tenant(harness)
    created = await create_key(harness, admin)
    assert await works(harness, created["key"])  # now in the key cache

    revoked = await harness.http.delete(f"/v1/keys/{created['id']}", headers=bearer(admin))
    assert revoked.status_code == 204, revoked.text
    assert revoked.content == b""
    assert not await works(harness, created["key"])
    shown = (await harness.http.get(f"/v1/keys/{created['id']}", headers=bearer(admin))).json()
    assert shown["revoked_at"] is not None


@pytest.mark.parametrize("state", ["rotated", "revoked"])
async def test_rotating_a_rotated_or_revoked_key_is_a_409_conflict(
    harness: Harness, state: str
) -> None:
    """The request is well formed; the key's state forbids it (errors.py: Conflict, 409)."""
    admin = await admin_of_new_tenant(harness)
    old = await create_key(harness, admin)
    if state == "rotated":
        done = await harness.http.post(f"/v1/keys/{old['id']}/rotate", headers=bearer(admin))
    else:
        done = await harness.http.delete(f"/v1/keys/{old['id']}", headers=bearer(admin))
    assert done.is_success, done.text

    refused = await harness.http.post(f"/v1/keys/{old['id']}/rotate", headers=bearer(admin))
    assert_problem(refused, 409, "conflict")


async def test_a_wrong_checksum_is_refused_before_any_lookup(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = await admin_of_new_tenant(harness)
    created = await create_key(harness, admin)
    secret = created["key"]
    repository = harness.state.store.keys
    lookups: list[str] = []
    real_get = repository.get

    async def counting_get(key_id: str) -> Any:
        lookups.append(key_id)
        return await real_get(key_id)

    monkeypatch.setattr(repository, "get", counting_get)

    checksum_typo = flip_last(secret)
    secret_typo = secret[:25] + flip_last(secret[:26])[-1] + secret[26:]
    assert secret_typo != secret
    assert len(secret_typo) == len(secret)
    refusals = []
    for typo in (checksum_typo, secret_typo):
        response = await harness.http.get("/v1/usage", headers=bearer(typo))
        assert_unauthorized(response)
        refusals.append(response)
    assert lookups == [], "a key with a wrong checksum reached the key store"

    body = "sr_live_" + "A" * 32
    unknown = await harness.http.get("/v1/usage", headers=bearer(body + checksum(body)))
    assert_unauthorized(unknown)
    assert lookups == ["key_" + "A" * 12], "the control key should have been looked up"
    for refusal in refusals:
        assert without_request_id(refusal) == without_request_id(unknown)
        assert refusal.headers["www-authenticate"] == unknown.headers["www-authenticate"]
        assert refusal.headers["content-type"] == unknown.headers["content-type"]

    assert await works(harness, secret)


async def test_test_mode_keys(harness: Harness) -> None:
    admin = await admin_of_new_tenant(harness)
    created = await create_key(harness, admin, mode="test")
    assert created["key"].startswith("sr_test_")
    assert KEY_PATTERN.match(created["key"])
    assert created["mode"] == "test"
    assert await works(harness, created["key"])
    rotated = await harness.http.post(f"/v1/keys/{created['id']}/rotate", headers=bearer(admin))
    assert rotated.json()["key"].startswith("sr_test_")


@pytest.mark.parametrize(
    "expires_at",
    [
        pytest.param("2001-01-01T00:00:00Z", id="past"),
        pytest.param(datetime.now(UTC).replace(microsecond=0).isoformat(), id="now-ish"),
        pytest.param("2999-01-01T00:00:00", id="no-offset"),
        pytest.param("tomorrow", id="not-a-time"),
    ],
)
async def test_expires_at_must_be_a_future_rfc3339_time(harness: Harness, expires_at: str) -> None:
    admin = await admin_of_new_tenant(harness)
    response = await harness.http.post(
        "/v1/keys",
        json={"name": "x", "role": "viewer", "expires_at": expires_at},
        headers=bearer(admin),
    )
    assert_problem(response, 422)
    keys = (await harness.http.get("/v1/keys", headers=bearer(admin))).json()["data"]
    assert len(keys) == 1, "a refused key was stored"


async def test_a_future_expiry_is_kept_and_enforced(harness: Harness) -> None:
    admin = await admin_of_new_tenant(harness)
    expires = datetime.now(UTC) + timedelta(seconds=1)
    created = await create_key(harness, admin, expires_at=expires.isoformat())
    assert created["expires_at"] == pytest.approx(expires.timestamp(), abs=0.001)
    assert await works(harness, created["key"])
    await asyncio.sleep(max(0.0, expires.timestamp() - time.time()) + 0.1)
    assert not await works(harness, created["key"])


async def test_last_used_at_is_set_after_use_and_a_flush(harness: Harness) -> None:
    admin = await admin_of_new_tenant(harness)
    created = await create_key(harness, admin)

    async def last_used() -> float | None:
        response = await harness.http.get(f"/v1/keys/{created['id']}", headers=bearer(admin))
        value: float | None = response.json()["last_used_at"]
        return value

    await harness.state.keys.flush_last_used()
    assert await last_used() is None
    before = time.time()
    assert await works(harness, created["key"])
    await harness.state.keys.flush_last_used()
    used = await last_used()
    assert used is not None
    assert before - 1 <= used <= time.time() + 1


async def test_keys_of_other_tenants_are_not_found(harness: Harness) -> None:
    admin = await admin_of_new_tenant(harness)
    other = await harness.key(await harness.tenant(), Role.ADMIN)
    for method, suffix in (("GET", ""), ("DELETE", ""), ("POST", "/rotate")):
        response = await harness.http.request(
            method, f"/v1/keys/{other.record.id}{suffix}", headers=bearer(admin)
        )
        assert_problem(response, 404, "not_found")
    assert await works(harness, other.secret)


@pytest.mark.parametrize("key_id", ["key_short", "nope", "key_" + "a" * 13, "key_abc!defghijk"])
async def test_malformed_key_ids_are_422(harness: Harness, key_id: str) -> None:
    admin = await admin_of_new_tenant(harness)
    response = await harness.http.get(f"/v1/keys/{key_id}", headers=bearer(admin))
    assert_problem(response, 422)
