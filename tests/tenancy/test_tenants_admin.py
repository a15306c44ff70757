"""Platform administration of tenants over ``/v1/admin/tenants`` (scope ``tenants:admin``).

1. A platform key creates, lists, shows (by id or name), suspends and resumes
   tenants; a tenant's own admin key gets 403 naming ``tenants:admin``.
2. Names are unique (409) and 1–128 letters, digits, space, ``._-`` (422).
3. A suspended tenant's keys get 403 ``tenant_suspended`` at once, configured keys
   of the default tenant included; resuming restores them.
4. Export streams JSON lines: the tenant, its keys without secrets, its usage
   (counted so far) and its stream records, nothing of another tenant.
5. Erase deletes the tenant's records, keys and usage, keeps a tombstone with
   status ``erased`` and the name cleared, and leaves other tenants untouched.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from tenancy_support import TENANT_ID_PATTERN, Harness, assert_forbidden_naming, assert_unauthorized

from strongroom.domain.access import Role
from strongroom.domain.topics import AUDIT, TOKENIZED, dead_letter_topic
from strongroom.ports import StoredRecord
from support import KEY, KEY_IN_TEXT, bearer
from support_problems import assert_problem

MakeHarness = Callable[..., AbstractAsyncContextManager[Harness]]


async def platform_key(harness: Harness) -> str:
    operators = await harness.tenant("platform operators")
    return (await harness.key(operators, Role.ADMIN, platform=True)).secret


async def create_tenant(harness: Harness, platform: str, name: str) -> dict[str, Any]:
    response = await harness.http.post(
        "/v1/admin/tenants", json={"name": name}, headers=bearer(platform)
    )
    assert response.status_code == 201, response.text
    tenant: dict[str, Any] = response.json()
    return tenant


async def records_of(harness: Harness, tenant_id: str) -> dict[str, list[StoredRecord]]:
    """The tenant's records in every topic of the log."""
    return {
        topic: await harness.state.log.read(topic, tenant=tenant_id, after=None, limit=10_000)
        for topic in (TOKENIZED, dead_letter_topic(TOKENIZED), AUDIT)
    }


def export_lines(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = response.text.splitlines()
    assert lines
    return [json.loads(line) for line in lines]


async def test_create_list_show_suspend_resume(harness: Harness) -> None:
    platform = await platform_key(harness)
    created = await create_tenant(harness, platform, "Acme Corp.")
    assert TENANT_ID_PATTERN.match(created["id"])
    assert created["name"] == "Acme Corp."
    assert created["status"] == "active"

    for ref in (created["id"], "Acme Corp."):
        shown = await harness.http.get(f"/v1/admin/tenants/{ref}", headers=bearer(platform))
        assert shown.status_code == 200, shown.text
        assert shown.json() == created

    listed = await harness.http.get("/v1/admin/tenants", headers=bearer(platform))
    assert listed.status_code == 200
    assert created in listed.json()["data"]

    suspended = await harness.http.post(
        f"/v1/admin/tenants/{created['id']}/suspend", headers=bearer(platform)
    )
    assert suspended.status_code == 200, suspended.text
    assert suspended.json()["status"] == "suspended"
    resumed = await harness.http.post(
        f"/v1/admin/tenants/{created['id']}/resume", headers=bearer(platform)
    )
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["status"] == "active"


async def test_the_tenant_list_pages_with_next(harness: Harness) -> None:
    platform = await platform_key(harness)
    for index in range(3):
        await create_tenant(harness, platform, f"paged {index}")
    everyone = {t.id for t in await harness.state.tenants.list(after=None, limit=1000)}
    seen: list[str] = []
    after: str | None = None
    for _ in range(20):
        params: dict[str, Any] = {"limit": 2, **({"after": after} if after else {})}
        page = (
            await harness.http.get("/v1/admin/tenants", params=params, headers=bearer(platform))
        ).json()
        seen.extend(t["id"] for t in page["data"])
        if page["next"] is None:
            break
        after = page["next"]
    assert sorted(seen) == sorted(everyone)
    assert len(seen) == len(set(seen))


@pytest.mark.parametrize("role", [Role.ADMIN, Role.OPERATOR, Role.VIEWER])
async def test_a_tenants_own_keys_are_not_platform_keys(harness: Harness, role: Role) -> None:
    tenant = await harness.tenant()
    key = await harness.key(tenant, role)
    requests = [
        ("POST", "/v1/admin/tenants", {"name": "sneaky"}),
        ("GET", "/v1/admin/tenants", None),
        ("GET", f"/v1/admin/tenants/{tenant.id}", None),
        ("POST", f"/v1/admin/tenants/{tenant.id}/resume", None),
        ("GET", f"/v1/admin/tenants/{tenant.id}/export", None),
        ("DELETE", f"/v1/admin/tenants/{tenant.id}", None),
    ]
    for method, path, body in requests:
        response = await harness.http.request(method, path, json=body, headers=bearer(key.secret))
        assert_forbidden_naming(response, "tenants:admin")
    assert await harness.state.tenants.find("sneaky") is None
    assert (await harness.state.tenants.get(tenant.id)).status.value == "active"


async def test_duplicate_names_are_409(harness: Harness) -> None:
    platform = await platform_key(harness)
    await create_tenant(harness, platform, "acme")
    again = await harness.http.post(
        "/v1/admin/tenants", json={"name": "acme"}, headers=bearer(platform)
    )
    assert_problem(again, 409, "conflict")


@pytest.mark.parametrize(
    "name",
    ["", "-leading-dash", " leading space", "has/slash", "tab\tname", "x" * 129, "ünicode", "a;b"],
)
async def test_invalid_names_are_422(harness: Harness, name: str) -> None:
    platform = await platform_key(harness)
    response = await harness.http.post(
        "/v1/admin/tenants", json={"name": name}, headers=bearer(platform)
    )
    assert_problem(response, 422)
    assert len(await harness.state.tenants.list(after=None, limit=100)) == 1


async def test_unknown_tenants_are_404(harness: Harness) -> None:
    platform = await platform_key(harness)
    for method, suffix in (("GET", ""), ("POST", "/suspend"), ("GET", "/export"), ("DELETE", "")):
        response = await harness.http.request(
            method, f"/v1/admin/tenants/ten_NoSuchTenantXYZ{suffix}", headers=bearer(platform)
        )
        assert_problem(response, 404, "not_found")


async def test_a_suspended_tenants_keys_get_403_at_once(harness: Harness) -> None:
    platform = await platform_key(harness)
    tenant = await harness.tenant()
    admin = await harness.key(tenant, Role.ADMIN)
    viewer = await harness.key(tenant, Role.VIEWER)
    bystander = await harness.key(await harness.tenant(), Role.VIEWER)
    for key in (admin, viewer):  # both now sit in the gateway's key cache
        assert (await harness.http.get("/v1/usage", headers=bearer(key.secret))).status_code == 200

    suspended = await harness.http.post(
        f"/v1/admin/tenants/{tenant.id}/suspend", headers=bearer(platform)
    )
    assert suspended.status_code == 200, suspended.text
    for key in (admin, viewer):
        for method, path in (("GET", "/v1/usage"), ("GET", "/v1/keys"), ("POST", "/v1/events")):
            response = await harness.http.request(
                method, path, json={} if method == "POST" else None, headers=bearer(key.secret)
            )
            body = assert_problem(response, 403, "tenant_suspended")
            assert "suspended" in body["detail"]
    bystanding = await harness.http.get("/v1/usage", headers=bearer(bystander.secret))
    assert bystanding.status_code == 200

    resumed = await harness.http.post(
        f"/v1/admin/tenants/{tenant.id}/resume", headers=bearer(platform)
    )
    assert resumed.status_code == 200, resumed.text
    for key in (admin, viewer):
        assert (await harness.http.get("/v1/usage", headers=bearer(key.secret))).status_code == 200


async def test_suspending_the_default_tenant_stops_configured_keys(
    make_harness: MakeHarness,
) -> None:
    """``STRONGROOM_API_KEYS`` keys are the default tenant's keys: its status binds them."""
    async with make_harness(api_keys=(SecretStr(KEY),)) as harness:
        platform = await platform_key(harness)
        assert (await harness.http.get("/v1/usage", headers=bearer(KEY))).status_code == 200

        suspended = await harness.http.post(
            "/v1/admin/tenants/default/suspend", headers=bearer(platform)
        )
        assert suspended.status_code == 200, suspended.text
        response = await harness.http.get("/v1/usage", headers=bearer(KEY))
        assert_problem(response, 403, "tenant_suspended")

        await harness.http.post("/v1/admin/tenants/default/resume", headers=bearer(platform))
        assert (await harness.http.get("/v1/usage", headers=bearer(KEY))).status_code == 200


async def test_export_holds_the_tenant_its_keys_usage_and_records_only(
    harness: Harness,
) -> None:
    platform = await platform_key(harness)
    tenant = await harness.tenant("exported")
    admin = await harness.key(tenant, Role.ADMIN, name="exported admin")
    revoked = await harness.key(tenant, Role.VIEWER, name="revoked viewer")
    await harness.state.keys.revoke(tenant.id, revoked.record.id)
    other = await harness.tenant("bystander")
    other_admin = await harness.key(other, Role.ADMIN, name="bystander admin")

    mine = await harness.ingest(admin.secret, 3)
    theirs = await harness.ingest(other_admin.secret, 2)
    await harness.state.usage.flush()

    response = await harness.http.get(
        f"/v1/admin/tenants/{tenant.name}/export", headers=bearer(platform)
    )
    lines = export_lines(response)
    text = response.text
    assert KEY_IN_TEXT.search(text) is None
    assert "sr_live_" not in text
    assert "secret_hash" not in text
    for secret in (admin.secret, revoked.secret, other_admin.secret):
        assert secret not in text
        assert secret[8:] not in text

    assert lines[0]["type"] == "tenant"
    assert lines[0]["id"] == tenant.id
    assert lines[0]["name"] == "exported"
    by_type: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        by_type.setdefault(line["type"], []).append(line)
    assert set(by_type) == {"tenant", "api_key", "usage", "record"}
    assert len(by_type["tenant"]) == 1

    assert {k["id"] for k in by_type["api_key"]} == {admin.record.id, revoked.record.id}
    for key_line in by_type["api_key"]:
        assert key_line["tenant"] == tenant.id
        assert not [field for field in key_line if "hash" in field or "secret" in field]

    usage = [u for u in by_type["usage"] if u["operation"] == "events_ingested"]
    assert sum(u["count"] for u in usage) == 3
    assert all(u["tenant_id"] == tenant.id for u in by_type["usage"])

    records = by_type["record"]
    events = [r["record"]["event_id"] for r in records if r["topic"] == TOKENIZED]
    assert sorted(events) == sorted(mine)
    for record in records:  # whatever else is exported is the tenant's own
        assert record["record"].get("tenant", tenant.id) == tenant.id, record
        assert record["record"].get("event_id") not in theirs
    assert other.id not in text
    assert "bystander" not in text


async def test_export_includes_usage_not_yet_flushed(harness: Harness) -> None:
    """Usage is counted in memory and flushed periodically; the export must not miss it."""
    platform = await platform_key(harness)
    tenant = await harness.tenant()
    admin = await harness.key(tenant, Role.ADMIN)
    await harness.ingest(admin.secret, 2)

    response = await harness.http.get(
        f"/v1/admin/tenants/{tenant.id}/export", headers=bearer(platform)
    )
    usage = [line for line in export_lines(response) if line["type"] == "usage"]
    assert sum(u["count"] for u in usage if u["operation"] == "events_ingested") == 2, usage


async def test_erase_removes_records_keys_and_usage_and_keeps_a_tombstone(
    harness: Harness,
) -> None:
    platform = await platform_key(harness)
    tenant = await harness.tenant("to be erased")
    admin = await harness.key(tenant, Role.ADMIN)
    viewer = await harness.key(tenant, Role.VIEWER)
    other = await harness.tenant("stays")
    other_admin = await harness.key(other, Role.ADMIN)

    await harness.ingest(admin.secret, 3)
    kept = await harness.ingest(other_admin.secret, 2)
    group_read = await harness.http.post(
        "/v1/streams/payments.tokenized/groups/g/read", json={}, headers=bearer(viewer.secret)
    )
    assert len(group_read.json()["data"]) == 3
    await harness.state.usage.flush()
    held = await records_of(harness, tenant.id)
    assert len(held[TOKENIZED]) == 3

    erased = await harness.http.delete(f"/v1/admin/tenants/{tenant.id}", headers=bearer(platform))
    assert erased.status_code == 200, erased.text
    body = erased.json()
    assert body["id"] == tenant.id
    assert body["status"] == "erased"
    assert body["records_erased"] == sum(len(records) for records in held.values())
    assert body["name"] != "to be erased", "the tombstone keeps the tenant's name"

    for key in (admin, viewer):
        assert_unauthorized(await harness.http.get("/v1/usage", headers=bearer(key.secret)))
    left = await records_of(harness, tenant.id)
    assert left[TOKENIZED] == []
    assert left[dead_letter_topic(TOKENIZED)] == []
    # Only the record of the erasure itself may follow it onto the audit stream.
    assert {json.loads(r.payload)["action"] for r in left[AUDIT]} <= {"tenant.erased"}
    assert await harness.state.keys.list(tenant.id, after=None, limit=100) == []
    assert await harness.state.usage.query(tenant.id, "0000-00-00", "9999-99-99") == []

    tombstone = await harness.http.get(f"/v1/admin/tenants/{tenant.id}", headers=bearer(platform))
    assert tombstone.status_code == 200
    assert tombstone.json()["status"] == "erased"
    exported = export_lines(
        await harness.http.get(f"/v1/admin/tenants/{tenant.id}/export", headers=bearer(platform))
    )
    assert [line["type"] for line in exported] == ["tenant"]

    # Other tenants are untouched.
    assert sorted(await harness.event_ids(other_admin.secret)) == sorted(kept)
    assert (await harness.state.tenants.get(other.id)).status.value == "active"

    # Erased is final; the name is free again, under a new id.
    again = await harness.http.delete(f"/v1/admin/tenants/{tenant.id}", headers=bearer(platform))
    assert_problem(again, 404, "not_found")
    resume = await harness.http.post(
        f"/v1/admin/tenants/{tenant.id}/resume", headers=bearer(platform)
    )
    assert_problem(resume, 404, "not_found")
    reborn = await create_tenant(harness, platform, "to be erased")
    assert reborn["id"] != tenant.id


async def test_erase_leaves_no_usage_behind_even_before_a_flush(harness: Harness) -> None:
    """Usage counted in memory but not yet flushed must not reappear after the erase."""
    platform = await platform_key(harness)
    tenant = await harness.tenant()
    admin = await harness.key(tenant, Role.ADMIN)
    await harness.ingest(admin.secret, 2)

    erased = await harness.http.delete(f"/v1/admin/tenants/{tenant.id}", headers=bearer(platform))
    assert erased.status_code == 200, erased.text
    await harness.state.usage.flush()  # what the gateway's periodic flusher does next
    assert await harness.state.usage.query(tenant.id, "0000-00-00", "9999-99-99") == []
