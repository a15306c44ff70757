"""Tenant isolation and access control on every ``/v1`` route, as one table.

``MATRIX`` lists every route the app serves under ``/v1``; a route missing from it
fails ``test_matrix_covers_every_v1_route``, so a new route cannot ship untested.
Each route is checked in every column:

1. own tenant: a key of the caller's tenant holding the scope gets the route's 2xx
   (platform routes use a platform key, one holding ``tenants:admin``);
2. another tenant's object: a key id of tenant B is 404 for tenant A, answered
   exactly like a key id that does not exist, and B's key is untouched; a tenant id
   on a platform route is 403 naming ``tenants:admin`` for a non-platform admin key;
   an audit record of tenant B is 404 for tenant A as well;
3. no key: 401 with ``WWW-Authenticate: Bearer``;
4. a key lacking the route's scope: 403 naming that scope;
5. a revoked key: 401; 6. an expired key: 401.

Then: tenant B's records never appear in tenant A's stream reads, consumer groups or audit
trail, and each tenant's usage counts its own ingests only.

All tests share one gateway (module scope): tenants A, B and a platform tenant, and
A's viewer, narrowed, revoked and expired keys are made once; routes that change
state act on throwaway keys and tenants so the columns cannot disturb each other.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import yaml
from fastapi import FastAPI
from tenancy_support import (
    Harness,
    assert_forbidden_naming,
    assert_unauthorized,
    open_harness,
    today,
    without_request_id,
)

from strongroom.domain.access import ROLE_SCOPES, Role, Scope
from strongroom.domain.risk import DEFAULT_POLICY_TEXT
from strongroom.domain.tenancy import Tenant, TenantStatus
from strongroom.services.keys import IssuedKey
from strongroom.services.risk import CardRef, RiskRequest
from support import TOKENIZED_URL, bearer, card_free_event
from support_problems import assert_problem

pytestmark = pytest.mark.asyncio(loop_scope="module")

MISSING_KEY_ID = "key_000000000000"
HTTP_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"})


@dataclass
class World:
    harness: Harness
    a: Tenant
    b: Tenant
    platform_tenant: Tenant
    a_admin: IssuedKey
    a_viewer: IssuedKey
    a_writer: IssuedKey
    a_revoked: IssuedKey
    a_expired: IssuedKey
    b_admin: IssuedKey
    platform: IssuedKey

    async def throwaway_key(self, tenant: Tenant) -> IssuedKey:
        return await self.harness.key(tenant, Role.VIEWER, name="throwaway")

    async def throwaway_tenant(self, status: TenantStatus = TenantStatus.ACTIVE) -> Tenant:
        tenant = await self.harness.tenant()
        if status is not TenantStatus.ACTIVE:
            tenant = await self.harness.state.tenants.set_status(tenant.id, status)
        return tenant


@dataclass
class Target:
    """A request to make, and for another tenant's object, how to prove it was untouched."""

    path: str
    body: Any = None
    missing_path: str | None = None
    untouched: Callable[[], Awaitable[None]] | None = None


Builder = Callable[[World], Awaitable[Target]]


@dataclass(frozen=True)
class RouteCase:
    method: str
    template: str
    scope: Scope
    success: int
    build: Builder
    foreign: Builder | None = None

    @property
    def platform(self) -> bool:
        return self.scope is Scope.TENANTS_ADMIN

    @property
    def name(self) -> str:
        return f"{self.method} {self.template}"


def static(path: str, body: Callable[[], Any] | None = None) -> Builder:
    async def build(world: World) -> Target:
        return Target(path, body() if body else None)

    return build


def own_key(suffix: str = "", body: Any = None) -> Builder:
    async def build(world: World) -> Target:
        key = await world.throwaway_key(world.a)
        return Target(f"/v1/keys/{key.record.id}{suffix}", body)

    return build


def foreign_key(suffix: str = "", body: Any = None) -> Builder:
    """A live key of tenant B; afterwards it must still exist, unrevoked, unrotated, working."""

    async def build(world: World) -> Target:
        key = await world.throwaway_key(world.b)

        async def untouched() -> None:
            record = await world.harness.state.keys.get(world.b.id, key.record.id)
            assert record.revoked_at is None
            assert record.replaced_by is None
            assert record.expires_at is None
            response = await world.harness.http.get("/v1/usage", headers=bearer(key.secret))
            assert response.status_code == 200, response.text

        return Target(
            f"/v1/keys/{key.record.id}{suffix}",
            body,
            missing_path=f"/v1/keys/{MISSING_KEY_ID}{suffix}",
            untouched=untouched,
        )

    return build


def tenant_target(suffix: str = "", status: TenantStatus = TenantStatus.ACTIVE) -> Builder:
    """A throwaway tenant (mutating routes), checked afterwards to be as it was."""

    async def build(world: World) -> Target:
        tenant = await world.throwaway_tenant(status)

        async def untouched() -> None:
            found = await world.harness.state.tenants.get(tenant.id)
            assert found.status is status
            assert found.name == tenant.name

        return Target(f"/v1/admin/tenants/{tenant.id}{suffix}", untouched=untouched)

    return build


def tenant_b(suffix: str = "") -> Builder:
    async def build(world: World) -> Target:
        return Target(f"/v1/admin/tenants/{world.b.id}{suffix}")

    return build


async def audit_seq(world: World, key: IssuedKey) -> int:
    """The sequence number of one audit record of the key's tenant."""
    response = await world.harness.http.get("/v1/audit", headers=bearer(key.secret))
    assert response.status_code == 200, response.text
    records = response.json()["data"]
    assert records, "the tenant has no audit records"
    seq: int = records[0]["seq"]
    return seq


async def own_audit_record(world: World) -> Target:
    seq = await audit_seq(world, world.a_admin)
    return Target(f"/v1/audit/proof/inclusion?seq={seq}&tree_size={seq + 1}")


async def foreign_audit_record(world: World) -> Target:
    seq = await audit_seq(world, world.b_admin)
    return Target(f"/v1/audit/proof/inclusion?seq={seq}&tree_size={seq + 1}")


async def signed_checkpoint(world: World) -> Target:
    await world.harness.state.audit.checkpoint()
    return Target("/v1/audit/checkpoints/latest")


def random_card_number() -> str:
    """A Luhn-valid Visa number no other test uses."""
    body = "4" + "".join(str(secrets.randbelow(10)) for _ in range(14))
    total = 0
    for index, char in enumerate(reversed(body)):
        digit = int(char)
        if index % 2 == 0:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return body + str((10 - total % 10) % 10)


def new_card() -> dict[str, Any]:
    return {"number": random_card_number(), "exp_month": 12, "exp_year": 2040}


async def vaulted(world: World, tenant: Tenant) -> str:
    state = world.harness.state
    card = new_card()
    valid = state.vault.validate(card["number"], card["exp_month"], card["exp_year"])
    return (await state.vault.tokenize(tenant.id, valid)).token


MISSING_TOKEN = "tok_" + "0" * 24


def own_token(suffix: str = "") -> Builder:
    async def build(world: World) -> Target:
        return Target(f"/v1/tokens/{await vaulted(world, world.a)}{suffix}")

    return build


def foreign_token_check(world: World, token: str) -> Callable[[], Awaitable[None]]:
    async def untouched() -> None:
        await world.harness.state.vault.describe(world.b.id, token)

    return untouched


def foreign_token() -> Builder:
    async def build(world: World) -> Target:
        token = await vaulted(world, world.b)
        return Target(
            f"/v1/tokens/{token}",
            missing_path=f"/v1/tokens/{MISSING_TOKEN}",
            untouched=foreign_token_check(world, token),
        )

    return build


async def own_detokenize(world: World) -> Target:
    return Target("/v1/tokens/detokenize", {"token": await vaulted(world, world.a)})


async def foreign_detokenize(world: World) -> Target:
    token = await vaulted(world, world.b)
    return Target(
        "/v1/tokens/detokenize", {"token": token}, untouched=foreign_token_check(world, token)
    )


def transaction_body() -> dict[str, Any]:
    return {
        "transaction_id": f"txn_{uuid.uuid4().hex}",
        "amount": 1_000,
        "currency": "EUR",
        "merchant_id_hash": f"m_{uuid.uuid4().hex}",
        "card": new_card(),
    }


async def decided(world: World, tenant: Tenant) -> str:
    """The trace id of a decision made in ``tenant``."""
    evaluation = await world.harness.state.risk.evaluate(
        tenant.id,
        RiskRequest(
            transaction_id=f"txn_{uuid.uuid4().hex}",
            amount=1_000,
            currency="EUR",
            merchant_id_hash="m_matrix",
            card=CardRef(token=await vaulted(world, tenant)),
        ),
        world.harness.state.clock.now(),
    )
    return evaluation.record.trace_id


MISSING_TRACE = "trc_" + "0" * 24


def own_decision(suffix: str = "") -> Builder:
    async def build(world: World) -> Target:
        return Target(f"/v1/decisions/{await decided(world, world.a)}{suffix}")

    return build


def foreign_decision(suffix: str = "") -> Builder:
    async def build(world: World) -> Target:
        trace_id = await decided(world, world.b)

        async def untouched() -> None:
            await world.harness.state.risk.decision(world.b.id, trace_id)

        return Target(
            f"/v1/decisions/{trace_id}{suffix}",
            missing_path=f"/v1/decisions/{MISSING_TRACE}{suffix}",
            untouched=untouched,
        )

    return build


def policy_body() -> dict[str, Any]:
    policy: dict[str, Any] = yaml.safe_load(DEFAULT_POLICY_TEXT)
    return policy


def unique_name() -> dict[str, str]:
    return {"name": f"made-{uuid.uuid4().hex[:12]}"}


T = TOKENIZED_URL
GROUP = f"{T}/groups/g1"
MATRIX: list[RouteCase] = [
    RouteCase("POST", "/v1/events", Scope.EVENTS_WRITE, 202, static("/v1/events", card_free_event)),
    RouteCase(
        "POST",
        "/v1/events/payment_exhaust",
        Scope.EVENTS_WRITE,
        202,
        static("/v1/events/payment_exhaust", card_free_event),
    ),
    RouteCase("GET", "/v1/streams/{topic}", Scope.STREAMS_READ, 200, static(T)),
    RouteCase(
        "POST",
        "/v1/streams/{topic}/groups/{group}/read",
        Scope.STREAMS_READ,
        200,
        static(f"{GROUP}/read", lambda: {"consumer": "c1"}),
    ),
    RouteCase(
        "POST",
        "/v1/streams/{topic}/groups/{group}/ack",
        Scope.STREAMS_READ,
        200,
        static(f"{GROUP}/ack", lambda: {"offsets": [0]}),
    ),
    RouteCase(
        "GET",
        "/v1/streams/{topic}/dead-letters",
        Scope.STREAMS_READ,
        200,
        static(f"{T}/dead-letters"),
    ),
    RouteCase(
        "POST",
        "/v1/streams/{topic}/groups/{group}/dead-letters/replay",
        Scope.STREAMS_READ,
        200,
        static(f"{GROUP}/dead-letters/replay", dict),
    ),
    RouteCase(
        "POST",
        "/v1/keys",
        Scope.KEYS_MANAGE,
        201,
        static("/v1/keys", lambda: {"name": "made", "role": "viewer"}),
    ),
    RouteCase("GET", "/v1/keys", Scope.KEYS_MANAGE, 200, static("/v1/keys")),
    RouteCase("GET", "/v1/keys/{key_id}", Scope.KEYS_MANAGE, 200, own_key(), foreign_key()),
    RouteCase(
        "POST",
        "/v1/keys/{key_id}/rotate",
        Scope.KEYS_MANAGE,
        201,
        own_key("/rotate", {"grace_period_seconds": 0}),
        foreign_key("/rotate", {"grace_period_seconds": 0}),
    ),
    RouteCase("DELETE", "/v1/keys/{key_id}", Scope.KEYS_MANAGE, 204, own_key(), foreign_key()),
    RouteCase("GET", "/v1/usage", Scope.USAGE_READ, 200, static("/v1/usage")),
    RouteCase("GET", "/v1/audit", Scope.AUDIT_READ, 200, static("/v1/audit")),
    RouteCase("GET", "/v1/audit/checkpoints/latest", Scope.AUDIT_READ, 200, signed_checkpoint),
    RouteCase(
        "GET",
        "/v1/audit/proof/inclusion",
        Scope.AUDIT_READ,
        200,
        own_audit_record,
        foreign_audit_record,
    ),
    RouteCase(
        "GET",
        "/v1/audit/proof/consistency",
        Scope.AUDIT_READ,
        200,
        static("/v1/audit/proof/consistency?first=1&second=2"),
    ),
    RouteCase(
        "POST",
        "/v1/admin/tenants",
        Scope.TENANTS_ADMIN,
        201,
        static("/v1/admin/tenants", unique_name),
    ),
    RouteCase("GET", "/v1/admin/tenants", Scope.TENANTS_ADMIN, 200, static("/v1/admin/tenants")),
    RouteCase(
        "GET", "/v1/admin/tenants/{tenant}", Scope.TENANTS_ADMIN, 200, tenant_target(), tenant_b()
    ),
    RouteCase(
        "POST",
        "/v1/admin/tenants/{tenant}/suspend",
        Scope.TENANTS_ADMIN,
        200,
        tenant_target("/suspend"),
        tenant_target("/suspend"),
    ),
    RouteCase(
        "POST",
        "/v1/admin/tenants/{tenant}/resume",
        Scope.TENANTS_ADMIN,
        200,
        tenant_target("/resume", TenantStatus.SUSPENDED),
        tenant_target("/resume", TenantStatus.SUSPENDED),
    ),
    RouteCase(
        "GET",
        "/v1/admin/tenants/{tenant}/export",
        Scope.TENANTS_ADMIN,
        200,
        tenant_target("/export"),
        tenant_b("/export"),
    ),
    RouteCase("POST", "/v1/tokens", Scope.TOKENS_CREATE, 201, static("/v1/tokens", new_card)),
    RouteCase(
        "POST",
        "/v1/tokens/detokenize",
        Scope.TOKENS_DETOKENIZE,
        200,
        own_detokenize,
        foreign_detokenize,
    ),
    RouteCase("GET", "/v1/tokens/{token}", Scope.TOKENS_CREATE, 200, own_token(), foreign_token()),
    RouteCase(
        "DELETE", "/v1/tokens/{token}", Scope.TOKENS_DETOKENIZE, 204, own_token(), foreign_token()
    ),
    RouteCase("GET", "/v1/settings", Scope.SETTINGS_MANAGE, 200, static("/v1/settings")),
    RouteCase(
        "PATCH",
        "/v1/settings",
        Scope.SETTINGS_MANAGE,
        200,
        static("/v1/settings", lambda: {"expose_bin": False}),
    ),
    RouteCase(
        "POST",
        "/v1/settings/signing-secret",
        Scope.SETTINGS_MANAGE,
        201,
        static("/v1/settings/signing-secret"),
    ),
    RouteCase(
        "POST",
        "/v1/transactions/evaluate",
        Scope.TRANSACTIONS_EVALUATE,
        200,
        static("/v1/transactions/evaluate", transaction_body),
    ),
    RouteCase(
        "GET",
        "/v1/decisions/{trace_id}",
        Scope.TRANSACTIONS_EVALUATE,
        200,
        own_decision(),
        foreign_decision(),
    ),
    RouteCase(
        "POST",
        "/v1/decisions/{trace_id}/replay",
        Scope.TRANSACTIONS_EVALUATE,
        200,
        own_decision("/replay"),
        foreign_decision("/replay"),
    ),
    RouteCase("GET", "/v1/policy", Scope.SETTINGS_MANAGE, 200, static("/v1/policy")),
    RouteCase("PUT", "/v1/policy", Scope.SETTINGS_MANAGE, 200, static("/v1/policy", policy_body)),
    RouteCase(
        "POST",
        "/v1/policy/test",
        Scope.SETTINGS_MANAGE,
        200,
        static("/v1/policy/test", lambda: {"policy": DEFAULT_POLICY_TEXT, "transactions": []}),
    ),
    RouteCase(
        "GET", "/v1/signals/processors", Scope.EVENTS_READ, 200, static("/v1/signals/processors")
    ),
    RouteCase(
        "DELETE",
        "/v1/admin/tenants/{tenant}",
        Scope.TENANTS_ADMIN,
        200,
        tenant_target(),
        tenant_target(),
    ),
]
FOREIGN = [case for case in MATRIX if case.foreign is not None]


def case_id(case: RouteCase) -> str:
    return case.name


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    directory: Path = tmp_path_factory.mktemp("matrix")
    async with open_harness(directory) as harness:
        state = harness.state
        a = await harness.tenant("tenant-a")
        b = await harness.tenant("tenant-b")
        platform_tenant = await harness.tenant("platform")
        a_admin = await harness.key(a, Role.ADMIN, name="a admin")
        a_viewer = await harness.key(a, Role.VIEWER, name="a viewer")
        a_writer = await harness.key(a, Role.OPERATOR, scopes=["events:write"], name="a writer")
        b_admin = await harness.key(b, Role.ADMIN, name="b admin")
        platform = await harness.key(platform_tenant, Role.ADMIN, platform=True, name="platform")

        # The revoked and expired keys work first, so their 401s prove revocation and expiry.
        a_revoked = await harness.key(a, Role.ADMIN, name="a revoked")
        a_expired = await harness.key(
            a, Role.ADMIN, name="a expired", expires_at=state.clock.now() + 1.0
        )
        for key in (a_revoked, a_expired):
            response = await harness.http.get("/v1/keys", headers=bearer(key.secret))
            assert response.status_code == 200, response.text
        await state.keys.revoke(a.id, a_revoked.record.id)
        assert a_expired.record.expires_at is not None
        await asyncio.sleep(max(0.0, a_expired.record.expires_at - state.clock.now()) + 0.05)

        yield World(
            harness, a, b, platform_tenant,
            a_admin, a_viewer, a_writer, a_revoked, a_expired, b_admin, platform,
        )  # fmt: skip


async def send(world: World, method: str, target: Target, secret: str | None) -> httpx.Response:
    headers = bearer(secret) if secret is not None else {}
    return await world.harness.http.request(method, target.path, json=target.body, headers=headers)


def served_v1_routes(app: FastAPI) -> set[tuple[str, str]]:
    """Every (method, path template) under ``/v1``.

    Read from the OpenAPI document, which lists every route wherever its router was
    included, and from ``app.routes`` for routes kept out of the document.
    """
    served = {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
        if path.startswith("/v1") and method.upper() in HTTP_METHODS
    }
    for route in app.routes:
        path = getattr(route, "path", "")
        if path.startswith("/v1"):
            methods = getattr(route, "methods", None) or {"ANY"}
            served |= {(method, path) for method in methods if method != "HEAD"}
    return served


async def test_matrix_covers_every_v1_route(world: World) -> None:
    served = served_v1_routes(world.harness.app)
    table = {(case.method, case.template) for case in MATRIX}
    assert len(table) == len(MATRIX), "a route is listed twice in MATRIX"
    uncovered = sorted(served - table)
    assert not uncovered, f"add these routes to MATRIX in {__name__}: {uncovered}"
    stale = sorted(table - served)
    assert not stale, f"MATRIX lists routes the app does not serve: {stale}"


@pytest.mark.parametrize("case", MATRIX, ids=case_id)
async def test_own_tenant_key_holding_the_scope_succeeds(world: World, case: RouteCase) -> None:
    target = await case.build(world)
    key = world.platform if case.platform else world.a_admin
    response = await send(world, case.method, target, key.secret)
    assert response.status_code == case.success, response.text
    if response.status_code != 204 and not case.platform:
        body = response.json()
        if isinstance(body, dict) and "tenant" in body:
            assert body["tenant"] == world.a.id, body


@pytest.mark.parametrize("case", FOREIGN, ids=case_id)
async def test_another_tenants_object_is_out_of_reach(world: World, case: RouteCase) -> None:
    assert case.foreign is not None
    target = await case.foreign(world)
    response = await send(world, case.method, target, world.a_admin.secret)
    if case.platform:
        # A tenant's own admin key is not a platform key: other tenants are not its business.
        assert_forbidden_naming(response, "tenants:admin")
    else:
        body = assert_problem(response, 404, "not_found")
        if target.missing_path is not None:
            missing_target = Target(target.missing_path, target.body)
            missing = await send(world, case.method, missing_target, world.a_admin.secret)
            assert_problem(missing, 404, "not_found")
            # Indistinguishable from an id that does not exist: existence does not leak.
            assert without_request_id(missing) == {
                k: v for k, v in body.items() if k != "request_id"
            }
    if target.untouched is not None:
        await target.untouched()


@pytest.mark.parametrize("case", MATRIX, ids=case_id)
async def test_no_key_is_401_with_www_authenticate(world: World, case: RouteCase) -> None:
    response = await send(world, case.method, await case.build(world), None)
    assert_unauthorized(response)


@pytest.mark.parametrize("case", MATRIX, ids=case_id)
async def test_key_lacking_the_scope_is_403_naming_it(world: World, case: RouteCase) -> None:
    key = world.a_viewer if case.scope not in ROLE_SCOPES[Role.VIEWER] else world.a_writer
    assert case.scope not in key.record.scopes
    response = await send(world, case.method, await case.build(world), key.secret)
    assert_forbidden_naming(response, case.scope.value)


@pytest.mark.parametrize("case", MATRIX, ids=case_id)
async def test_revoked_key_is_401(world: World, case: RouteCase) -> None:
    response = await send(world, case.method, await case.build(world), world.a_revoked.secret)
    assert_unauthorized(response)


@pytest.mark.parametrize("case", MATRIX, ids=case_id)
async def test_expired_key_is_401(world: World, case: RouteCase) -> None:
    response = await send(world, case.method, await case.build(world), world.a_expired.secret)
    assert_unauthorized(response)


async def group_ids(world: World, key: IssuedKey, group: str) -> list[dict[str, Any]]:
    response = await world.harness.http.post(
        f"{T}/groups/{group}/read",
        json={"consumer": "c1", "limit": 1000},
        headers=bearer(key.secret),
    )
    assert response.status_code == 200, response.text
    deliveries: list[dict[str, Any]] = response.json()["data"]
    return deliveries


async def test_streams_and_groups_never_show_another_tenants_records(world: World) -> None:
    harness = world.harness
    a_new = await harness.ingest(world.a_admin.secret, 3)
    b_new = await harness.ingest(world.b_admin.secret, 4)
    a_seen = await harness.event_ids(world.a_admin.secret)
    b_seen = await harness.event_ids(world.b_admin.secret)
    assert set(a_new) <= set(a_seen)
    assert set(b_new) <= set(b_seen)
    assert not set(a_seen) & set(b_seen)
    # Paging with explicit offsets from the start does not reach the other tenant either.
    page = await harness.http.get(
        T, params={"after": -1, "limit": 1000}, headers=bearer(world.a_viewer.secret)
    )
    assert {r["record"]["event_id"] for r in page.json()["data"]} == set(a_seen)

    # One group name in both tenants: two separate groups, each delivering its own records.
    group = "shared-group"
    b_deliveries = await group_ids(world, world.b_admin, group)
    a_deliveries = await group_ids(world, world.a_admin, group)
    assert {d["record"]["event_id"] for d in b_deliveries} == set(b_seen)
    assert {d["record"]["event_id"] for d in a_deliveries} == set(a_seen)

    # A cannot settle B's deliveries by acknowledging B's offsets in the same-named group.
    b_offsets = [d["offset"] for d in b_deliveries]
    a_ack = await harness.http.post(
        f"{T}/groups/{group}/ack", json={"offsets": b_offsets}, headers=bearer(world.a_admin.secret)
    )
    assert a_ack.status_code == 200, a_ack.text
    assert a_ack.json() == {"acknowledged": 0}
    b_ack = await harness.http.post(
        f"{T}/groups/{group}/ack", json={"offsets": b_offsets}, headers=bearer(world.b_admin.secret)
    )
    assert b_ack.json() == {"acknowledged": len(b_offsets)}

    letters = await harness.http.get(f"{T}/dead-letters", headers=bearer(world.a_admin.secret))
    assert letters.status_code == 200
    assert not {d["offset"] for d in letters.json()["data"]} & set(b_offsets)


async def test_audit_records_never_show_another_tenant(world: World) -> None:
    harness = world.harness
    await harness.ingest(world.b_admin.secret, 1)
    for tenant, key in ((world.a, world.a_admin), (world.b, world.b_admin)):
        trail = await harness.http.get("/v1/audit", headers=bearer(key.secret))
        assert trail.status_code == 200, trail.text
        assert trail.json()["data"]
        assert {r["tenant"] for r in trail.json()["data"]} == {tenant.id}
        stream = await harness.http.get(
            "/v1/streams/payments.audit", params={"limit": 1000}, headers=bearer(key.secret)
        )
        assert stream.status_code == 200, stream.text
        assert {r["record"]["tenant"] for r in stream.json()["data"]} <= {tenant.id}


async def test_usage_counts_only_the_callers_tenant(world: World) -> None:
    harness = world.harness
    await harness.ingest(world.a_admin.secret, 2)
    await harness.ingest(world.b_admin.secret, 5)
    for tenant, key in ((world.a, world.a_admin), (world.b, world.b_admin)):
        response = await harness.http.get(
            "/v1/usage", params={"from": today(), "to": today()}, headers=bearer(key.secret)
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["tenant"] == tenant.id
        ingested = sum(r["count"] for r in body["data"] if r["operation"] == "events_ingested")
        # Every event the tenant ingested, and nothing else, is in its stream: the counts agree.
        assert ingested == len(await harness.stream(key.secret)), (tenant.name, body)
