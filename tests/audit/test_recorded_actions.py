"""Every security-relevant action lands in the audit trail before its response leaves.

Each record is found right after the response (no sleeping, no polling) through
``GET /v1/audit?action=...`` with a platform admin key, matched by the response's
``X-Request-ID``, and carries seq, time, tenant, actor, action, outcome, origin
(client IP and request id) and resource:

* authentication failures (missing, malformed, unknown, revoked key; the actor is
  the key id when the key is a well-formed managed key) and use of an expired key;
* keys created, rotated and revoked, with role and scopes, never a secret;
* tenants created, suspended (and the refused requests while suspended), resumed,
  exported and erased;
* rate-limit violations, sampled: many 429s make few records, each with a count;
* dead letters replayed over HTTP and with ``strongroom stream dlq replay``;
* ``config.reloaded`` after SIGHUP to a real server.

A tenant admin sees only its own tenant's records; the platform key sees them all.
"""

from __future__ import annotations

import base64
import json
import signal
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
from audit_support import RECORD_FIELDS, AuditApp, all_record_data, bootstrap_key, cli

from strongroom.crypto.keyed_hash import keyed_hash
from strongroom.domain import api_keys
from strongroom.domain.access import ROLE_SCOPES, Role
from support import (
    KEY,
    KEY_IN_TEXT,
    UNTHROTTLED_ENV,
    GatewayProcess,
    bearer,
    card_free_event,
    key_id_of,
)

TOKENIZED: Final = "payments.tokenized"
CLIENT_IP: Final = "127.0.0.1"


def assert_record(
    record: dict[str, Any],
    response: httpx.Response | None,
    *,
    action: str,
    actor: str,
    tenant: str | None,
    outcome: str = "success",
    resource: str | None = None,
    ip: str | None = CLIENT_IP,
    since: float | None = None,
) -> dict[str, Any]:
    """Every field of a record, as the response that caused it implies; its details."""
    for name in RECORD_FIELDS:
        assert name in record, (name, record)
    assert isinstance(record["seq"], int)
    assert record["seq"] >= 0
    assert isinstance(record["time"], float)
    if since is not None:
        assert since - 1 <= record["time"] <= time.time() + 1, record
    assert record["action"] == action, record
    assert record["actor"] == actor, record
    assert record["tenant"] == tenant, record
    assert record["outcome"] == outcome, record
    assert record["resource"] == resource, record
    if response is None:
        assert record["origin"] == {"ip": None, "request_id": None}, record
    else:
        assert record["origin"] == {"ip": ip, "request_id": response.headers["x-request-id"]}
    assert len(bytes.fromhex(record["leaf_hash"])) == 32
    details: dict[str, Any] = record["details"]
    return details


async def tenant_admin(app: AuditApp, name: str | None = None) -> tuple[str, str]:
    """A new tenant and an admin key of it: (tenant id, secret)."""
    tenant = await app.tenant(name)
    issued = await app.key(tenant, Role.ADMIN, name="tenant admin")
    return tenant.id, issued.secret


# -- authentication ------------------------------------------------------------------------


async def test_authentication_failures_are_recorded(audit_app: AuditApp) -> None:
    tenant, admin = await tenant_admin(audit_app)
    revoked = await audit_app.key(tenant, Role.OPERATOR, name="to revoke")
    revoke = await audit_app.http.delete(f"/v1/keys/{revoked.record.id}", headers=bearer(admin))
    assert revoke.status_code == 204, revoke.text
    unknown_managed = api_keys.generate("live")
    bad_checksum = revoked.secret[:-1] + ("A" if revoked.secret[-1] != "A" else "B")

    cases: list[tuple[dict[str, str], str, str]] = [
        ({}, "missing", "anonymous"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "malformed", "anonymous"),
        (bearer("not-a-configured-key-at-all"), "unknown", "anonymous"),
        (bearer(unknown_managed), "unknown", key_id_of(unknown_managed)),
        (bearer(bad_checksum), "malformed", "anonymous"),
        (bearer(revoked.secret), "revoked", revoked.record.id),
    ]
    for headers, reason, actor in cases:
        started = time.time()
        response = await audit_app.http.get("/v1/audit", headers=headers)
        assert response.status_code == 401, response.text
        record = await audit_app.one(response, "auth.failed")
        details = assert_record(
            record, response, action="auth.failed", actor=actor, tenant=None,
            outcome="failure", since=started,
        )  # fmt: skip
        assert details == {"reason": reason}, (headers, record)

    revocation = await audit_app.one(revoke, "key.revoked")
    assert_record(
        revocation, revoke, action="key.revoked", actor=key_id_of(admin), tenant=tenant,
        resource=revoked.record.id,
    )  # fmt: skip


async def test_use_of_an_expired_key_is_recorded(audit_app: AuditApp) -> None:
    tenant, admin = await tenant_admin(audit_app)
    old = await audit_app.key(tenant, Role.OPERATOR, name="rotated at once")
    rotate = await audit_app.http.post(
        f"/v1/keys/{old.record.id}/rotate", json={"grace_period_seconds": 0}, headers=bearer(admin)
    )
    assert rotate.status_code == 201, rotate.text
    replacement = rotate.json()

    response = await audit_app.http.get(f"/v1/streams/{TOKENIZED}", headers=bearer(old.secret))
    assert response.status_code == 401, response.text
    record = await audit_app.one(response, "key.used_expired")
    details = assert_record(
        record, response, action="key.used_expired", actor=old.record.id, tenant=None,
        outcome="failure",
    )  # fmt: skip
    assert details == {"reason": "expired"}

    rotation = await audit_app.one(rotate, "key.rotated")
    details = assert_record(
        rotation, rotate, action="key.rotated", actor=key_id_of(admin), tenant=tenant,
        resource=old.record.id,
    )  # fmt: skip
    assert details["replaced_by"] == replacement["id"]
    assert details["grace_seconds"] == 0
    assert details["role"] == "operator"
    assert details["scopes"] == sorted(s.value for s in ROLE_SCOPES[Role.OPERATOR])


# -- keys ------------------------------------------------------------------------------------


async def test_key_lifecycle_is_recorded_with_role_and_scopes_never_secrets(
    audit_app: AuditApp,
) -> None:
    tenant, admin = await tenant_admin(audit_app)
    scopes = ["events:read", "streams:read"]
    create = await audit_app.http.post(
        "/v1/keys",
        json={"name": "reader", "role": "viewer", "scopes": scopes, "mode": "test"},
        headers=bearer(admin),
    )
    assert create.status_code == 201, create.text
    created = create.json()
    record = await audit_app.one(create, "key.created")
    details = assert_record(
        record, create, action="key.created", actor=key_id_of(admin), tenant=tenant,
        resource=created["id"],
    )  # fmt: skip
    assert details == {"role": "viewer", "scopes": scopes, "expires_at": None}

    rotate = await audit_app.http.post(f"/v1/keys/{created['id']}/rotate", headers=bearer(admin))
    assert rotate.status_code == 201, rotate.text
    rotated = rotate.json()
    details = assert_record(
        await audit_app.one(rotate, "key.rotated"), rotate, action="key.rotated",
        actor=key_id_of(admin), tenant=tenant, resource=created["id"],
    )  # fmt: skip
    assert details["role"] == "viewer"
    assert details["scopes"] == scopes
    assert details["replaced_by"] == rotated["id"]

    revoke = await audit_app.http.delete(f"/v1/keys/{rotated['id']}", headers=bearer(admin))
    assert revoke.status_code == 204, revoke.text
    assert_record(
        await audit_app.one(revoke, "key.revoked"), revoke, action="key.revoked",
        actor=key_id_of(admin), tenant=tenant, resource=rotated["id"],
    )  # fmt: skip

    # Secret-named details are dropped and card numbers masked before a record is built.
    await audit_app.state.audit.record(
        "test.details", actor="test", tenant=tenant,
        details={"secret": created["key"], "Password": "hunter2hunter2", "token": "t0k3n",
                 "authorization": f"Bearer {admin}", "note": "card 4111 1111 1111 1111"},
    )  # fmt: skip
    (cleaned,) = await audit_app.audit(action="test.details")
    assert set(cleaned["details"]) == {"note"}
    assert "4111 1111 1111 1111" not in cleaned["details"]["note"]

    secrets = [admin, audit_app.platform, created["key"], rotated["key"]]
    data = b"\n".join(all_record_data(audit_app.data_dir))
    text = data.decode()
    assert "sr_live_" not in text
    assert "sr_test_" not in text
    assert KEY_IN_TEXT.search(text) is None
    pepper = audit_app.state.pepper
    for secret in secrets:
        hashed = keyed_hash(pepper, secret)
        for material in (secret, secret[20:40], hashed.hex(), base64.b64encode(hashed).decode()):
            assert material not in text, material
        assert hashed not in data


# -- tenants ---------------------------------------------------------------------------------


async def test_tenant_lifecycle_is_recorded(audit_app: AuditApp) -> None:
    platform = bearer(audit_app.platform)
    platform_id = key_id_of(audit_app.platform)
    create = await audit_app.http.post(
        "/v1/admin/tenants", json={"name": "acme-audit"}, headers=platform
    )
    assert create.status_code == 201, create.text
    tenant = create.json()["id"]
    assert_record(
        await audit_app.one(create, "tenant.created"), create, action="tenant.created",
        actor=platform_id, tenant=tenant, resource=tenant,
    )  # fmt: skip
    member = await audit_app.key(tenant, Role.OPERATOR, name="member")

    suspend = await audit_app.http.post(f"/v1/admin/tenants/{tenant}/suspend", headers=platform)
    assert suspend.status_code == 200, suspend.text
    assert_record(
        await audit_app.one(suspend, "tenant.suspended"), suspend, action="tenant.suspended",
        actor=platform_id, tenant=tenant, resource=tenant,
    )  # fmt: skip

    denied = await audit_app.http.get(f"/v1/streams/{TOKENIZED}", headers=bearer(member.secret))
    assert denied.status_code == 403, denied.text
    details = assert_record(
        await audit_app.one(denied, "auth.denied"), denied, action="auth.denied",
        actor=member.record.id, tenant=None, outcome="failure",
    )  # fmt: skip
    assert details == {"reason": "tenant_suspended"}

    resume = await audit_app.http.post(f"/v1/admin/tenants/{tenant}/resume", headers=platform)
    assert resume.status_code == 200, resume.text
    assert_record(
        await audit_app.one(resume, "tenant.resumed"), resume, action="tenant.resumed",
        actor=platform_id, tenant=tenant, resource=tenant,
    )  # fmt: skip

    export = await audit_app.http.get(f"/v1/admin/tenants/{tenant}/export", headers=platform)
    assert export.status_code == 200, export.text
    assert_record(
        await audit_app.one(export, "tenant.exported"), export, action="tenant.exported",
        actor=platform_id, tenant=tenant, resource=tenant,
    )  # fmt: skip

    erase = await audit_app.http.delete(f"/v1/admin/tenants/{tenant}", headers=platform)
    assert erase.status_code == 200, erase.text
    details = assert_record(
        await audit_app.one(erase, "tenant.erased"), erase, action="tenant.erased",
        actor=platform_id, tenant=tenant, resource=tenant,
    )  # fmt: skip
    assert details == {
        "records_erased": erase.json()["records_erased"],
        "data_keys_destroyed": 0,
        "tokens_erased": 0,
        "secrets_erased": 0,
        "risk_policies_erased": 0,
        "risk_decisions_erased": 0,
    }


# -- rate limits -------------------------------------------------------------------------------


AppFactory = Callable[..., AbstractAsyncContextManager[AuditApp]]


async def test_rate_limit_violations_are_sampled(make_audit_app: AppFactory) -> None:
    async with make_audit_app(ratelimit_rps=0.01, ratelimit_burst=2) as app:
        tenant = await app.tenant()
        key = await app.key(tenant, Role.ADMIN)
        refused = []
        for _ in range(40):
            response = await app.http.get(f"/v1/streams/{TOKENIZED}", headers=bearer(key.secret))
            assert response.status_code in (200, 429), response.text
            if response.status_code == 429:
                refused.append(response)
        assert len(refused) >= 35
        # The platform key has a bucket of its own, so it can still read the trail.
        records = await app.audit(action="ratelimit.exceeded")
    assert 1 <= len(records) <= 2, records
    assert len(records) * 10 < len(refused)
    by_request = {r.headers["x-request-id"]: r for r in refused}
    for record in records:
        response = by_request[record["origin"]["request_id"]]
        details = assert_record(
            record, response, action="ratelimit.exceeded", actor=key.record.id,
            tenant=tenant.id, outcome="failure",
        )  # fmt: skip
        assert details["limit"] == "key"
        assert isinstance(details["violations"], int)
        assert details["violations"] >= 1
    assert sum(r["details"]["violations"] for r in records) <= len(refused)


async def test_failed_attempt_limit_violations_are_sampled(make_audit_app: AppFactory) -> None:
    async with make_audit_app(ip_ratelimit_rps=0.01, ip_ratelimit_burst=3) as app:
        statuses = []
        async with app.peer("10.20.30.40") as guesser:
            for index in range(30):
                response = await guesser.get("/v1/audit", headers=bearer(f"guess-{index:020d}"))
                statuses.append(response.status_code)
        assert set(statuses) == {401, 429}
        assert statuses.count(429) >= 25
        failures = [
            r for r in await app.audit(action="auth.failed") if r["origin"]["ip"] == "10.20.30.40"
        ]
        limited = await app.audit(action="ratelimit.exceeded")
    assert 1 <= len(failures) <= 4, failures
    assert 1 <= len(limited) <= 2, limited
    for record in limited:
        assert record["actor"] == "10.20.30.40"
        assert record["tenant"] is None
        assert record["outcome"] == "failure"
        assert record["origin"]["ip"] == "10.20.30.40"
        assert record["details"]["limit"] == "ip"
        assert record["details"]["violations"] >= 1


# -- dead letters ------------------------------------------------------------------------------


async def _dead_letters(app: AuditApp, secret: str, group: str) -> int:
    """Read the tenant's records into ``group`` until they die (max deliveries 1)."""
    first = await app.http.post(
        f"/v1/streams/{TOKENIZED}/groups/{group}/read",
        json={"limit": 100, "visibility_timeout_seconds": 0.001},
        headers=bearer(secret),
    )
    assert first.status_code == 200, first.text
    assert first.json()["data"]
    time.sleep(0.01)  # let the (1 ms) visibility timeout pass
    second = await app.http.post(
        f"/v1/streams/{TOKENIZED}/groups/{group}/read", json={"limit": 100}, headers=bearer(secret)
    )
    assert second.status_code == 200, second.text
    assert second.json()["data"] == []
    listed = await app.http.get(
        f"/v1/streams/{TOKENIZED}/dead-letters", params={"group": group}, headers=bearer(secret)
    )
    assert listed.status_code == 200, listed.text
    return len(listed.json()["data"])


async def test_dead_letter_replays_are_recorded_over_http_and_from_the_cli(
    make_audit_app: AppFactory,
) -> None:
    async with make_audit_app(consumer_max_deliveries=1) as app:
        tenant, admin = await tenant_admin(app)
        ingest = await app.http.post(
            "/v1/events",
            json={"events": [card_free_event() for _ in range(3)]},
            headers=bearer(admin),
        )
        assert ingest.status_code == 202, ingest.text
        assert await _dead_letters(app, admin, "billing") == 3
        assert await _dead_letters(app, admin, "ledger") == 3

        replay = await app.http.post(
            f"/v1/streams/{TOKENIZED}/groups/billing/dead-letters/replay",
            json={},
            headers=bearer(admin),
        )
        assert replay.status_code == 200, replay.text
        assert replay.json() == {"replayed": 3}
        details = assert_record(
            await app.one(replay, "stream.dead_letters_replayed"), replay,
            action="stream.dead_letters_replayed", actor=key_id_of(admin), tenant=tenant,
            resource=f"{TOKENIZED}/billing",
        )  # fmt: skip
        assert details == {"replayed": 3}

        # The operator's command, against the same data dir while the gateway runs.
        result = cli(
            "stream", "dlq", "replay", "--group", "ledger", "--tenant", tenant,
            "--data-dir", str(app.data_dir),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "replayed 3 dead letter(s)" in result.stdout
        records = await app.audit(action="stream.dead_letters_replayed")
        (from_cli,) = [r for r in records if r["resource"] == f"{TOKENIZED}/ledger"]
        assert from_cli["actor"].startswith("cli")
        details = assert_record(
            from_cli, None, action="stream.dead_letters_replayed", actor=from_cli["actor"],
            tenant=tenant, resource=f"{TOKENIZED}/ledger",
        )  # fmt: skip
        assert details == {"replayed": 3}

        # Records written by two processes still form one intact log.
        await app.state.audit.record("test.after_cli", actor="test")
        verdict = await app.state.audit.verify()
        assert verdict.ok, verdict.finding
        assert verdict.records == await app.state.store.audit.size()


# -- configuration -----------------------------------------------------------------------------


@pytest.mark.slow
def test_config_reload_on_sighup_is_recorded(
    start_server: Callable[..., GatewayProcess], tmp_path: Path
) -> None:
    env_file = tmp_path / "strongroom.env"
    env_file.write_text("STRONGROOM_LOG_LEVEL=info\n")
    server = start_server(
        env={**UNTHROTTLED_ENV, "STRONGROOM_ENV_FILE": str(env_file)}, configured_keys=False
    )
    platform = bearer(bootstrap_key(server))
    with server.client() as http:
        before = http.get("/v1/audit", params={"action": "config.reloaded"}, headers=platform)
        assert before.status_code == 200, before.text
        assert before.json()["data"] == []
        assert http.get(f"/v1/streams/{TOKENIZED}", headers=bearer(KEY)).status_code == 401

        env_file.write_text(f"STRONGROOM_API_KEYS={KEY}\nSTRONGROOM_REVOKED_KEYS=\n")
        started = time.time()
        server.signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        records: list[dict[str, Any]] = []
        while not records:
            assert time.monotonic() < deadline, f"no config.reloaded record:\n{server.output()}"
            assert server.process is not None
            assert server.process.poll() is None, server.output()
            time.sleep(0.05)
            answer = http.get("/v1/audit", params={"action": "config.reloaded"}, headers=platform)
            assert answer.status_code == 200, answer.text
            records = answer.json()["data"]
        assert http.get(f"/v1/streams/{TOKENIZED}", headers=bearer(KEY)).status_code == 200
    (record,) = records
    details = assert_record(
        record, None, action="config.reloaded", actor="system:sighup", tenant=None,
        since=started,
    )  # fmt: skip
    assert details == {"active_keys": 1, "revoked_keys": 0}
    assert KEY not in json.dumps(record)


# -- scoping -----------------------------------------------------------------------------------


async def test_a_tenant_admin_sees_only_its_tenant_and_the_platform_sees_all(
    audit_app: AuditApp,
) -> None:
    tenant_a, admin_a = await tenant_admin(audit_app, "tenant-a")
    tenant_b, admin_b = await tenant_admin(audit_app, "tenant-b")
    for admin in (admin_a, admin_b):
        made = await audit_app.http.post(
            "/v1/keys", json={"name": "worker", "role": "operator"}, headers=bearer(admin)
        )
        assert made.status_code == 201, made.text
    failed = await audit_app.http.get("/v1/audit", headers=bearer("not-a-key-just-noise"))
    assert failed.status_code == 401

    everything = await audit_app.audit()
    assert [r["seq"] for r in everything] == list(range(len(everything)))
    tenants_seen = {r["tenant"] for r in everything}
    assert {tenant_a, tenant_b, None, audit_app.home.id} <= tenants_seen

    for tenant, admin in ((tenant_a, admin_a), (tenant_b, admin_b)):
        own = await audit_app.audit(admin)
        assert own, tenant
        assert {r["tenant"] for r in own} == {tenant}
        assert own == [r for r in everything if r["tenant"] == tenant]
        assert {r["action"] for r in own} == {"tenant.created", "key.created"}
        filtered = await audit_app.audit(admin, action="auth.failed")
        assert filtered == []
