"""No escalation: a key grants only what it holds.

1. Only ``keys:manage`` reaches the key routes: operator and viewer keys get 403
   naming the scope, whatever they ask for.
2. A key creates keys only with a role ranked at most its own and scopes it holds;
   anything more is 403 naming what is wrong, and nothing is stored.
3. ``tenants:admin`` belongs to no role: only a key holding it can grant it.
4. An unknown scope name is 422 listing the valid ones.
5. Rotation follows the same rule: a lesser key cannot rotate a stronger one (the
   new key would be as strong as the old), and the old key stays as it was.
"""

from __future__ import annotations

from typing import Any

import pytest
from tenancy_support import Harness, assert_forbidden_naming

from strongroom.domain.access import ROLE_SCOPES, Role, Scope
from strongroom.domain.tenancy import Tenant
from strongroom.errors import PermissionDenied
from strongroom.services.keys import IssuedKey
from support import bearer
from support_problems import assert_problem


async def post_key(harness: Harness, secret: str, **body: Any) -> Any:
    return await harness.http.post(
        "/v1/keys", json={"name": "minted", **body}, headers=bearer(secret)
    )


async def key_count(harness: Harness, tenant: Tenant) -> int:
    return len(await harness.state.keys.list(tenant.id, after=None, limit=1000))


@pytest.mark.parametrize("role", [Role.OPERATOR, Role.VIEWER])
@pytest.mark.parametrize("asked", ["admin", "operator", "viewer"])
async def test_operator_and_viewer_keys_cannot_create_keys(
    harness: Harness, role: Role, asked: str
) -> None:
    tenant = await harness.tenant()
    lesser = await harness.key(tenant, role)
    response = await post_key(harness, lesser.secret, role=asked)
    assert_forbidden_naming(response, "keys:manage")
    assert await key_count(harness, tenant) == 1


async def test_no_granter_below_admin_may_mint_an_admin_key(harness: Harness) -> None:
    """The rule itself, at the service: an operator principal asking for an admin key."""
    tenant = await harness.tenant()
    operator = await harness.key(tenant, Role.OPERATOR)
    caller = await harness.state.keys.authenticate(f"Bearer {operator.secret}")
    for role, scopes in ((Role.ADMIN, None), (Role.OPERATOR, frozenset({Scope.KEYS_MANAGE}))):
        with pytest.raises(PermissionDenied) as refused:
            await harness.state.keys.create(
                tenant_id=tenant.id, name="x", role=role, scopes=scopes,
                expires_at=None, granted_by=caller,
            )  # fmt: skip
        assert refused.value.detail
    assert await key_count(harness, tenant) == 1


async def narrowed_admin(harness: Harness, *scopes: str) -> tuple[Tenant, IssuedKey]:
    tenant = await harness.tenant()
    return tenant, await harness.key(tenant, Role.ADMIN, scopes=scopes, name="narrowed admin")


@pytest.mark.parametrize(
    ("body", "named"),
    [
        pytest.param({"role": "operator", "scopes": ["events:read"]}, ["events:read"], id="scope"),
        pytest.param(
            {"role": "operator", "scopes": ["events:write", "events:read"]},
            ["events:read"],
            id="one-of-two",
        ),
        pytest.param({"role": "viewer"}, ["events:read", "usage:read"], id="whole-role"),
        pytest.param({"role": "admin"}, ["tokens:detokenize"], id="admin-role"),
        pytest.param(
            {"role": "admin", "scopes": ["tokens:detokenize"]}, ["tokens:detokenize"], id="detok"
        ),
    ],
)
async def test_a_narrowed_admin_cannot_grant_scopes_it_lacks(
    harness: Harness, body: dict[str, Any], named: list[str]
) -> None:
    tenant, granter = await narrowed_admin(harness, "keys:manage", "events:write")
    response = await post_key(harness, granter.secret, **body)
    assert_forbidden_naming(response, *named)
    assert "key" not in response.json()
    assert await key_count(harness, tenant) == 1


async def test_a_narrowed_admin_can_grant_what_it_holds(harness: Harness) -> None:
    _, granter = await narrowed_admin(harness, "keys:manage", "events:write")
    writer = await post_key(harness, granter.secret, role="operator", scopes=["events:write"])
    assert writer.status_code == 201, writer.text
    assert writer.json()["scopes"] == ["events:write"]
    manager = await post_key(harness, granter.secret, role="admin", scopes=["keys:manage"])
    assert manager.status_code == 201, manager.text
    assert manager.json()["scopes"] == ["keys:manage"]


async def test_a_role_cannot_be_widened_with_scopes(harness: Harness) -> None:
    tenant = await harness.tenant()
    admin = await harness.key(tenant, Role.ADMIN)
    response = await post_key(harness, admin.secret, role="viewer", scopes=["events:write"])
    assert_forbidden_naming(response, "events:write")
    assert await key_count(harness, tenant) == 1


async def test_only_a_platform_key_grants_tenants_admin(harness: Harness) -> None:
    tenant = await harness.tenant()
    admin = await harness.key(tenant, Role.ADMIN)
    refused = await post_key(
        harness, admin.secret, role="admin", scopes=["tenants:admin", "keys:manage"]
    )
    assert_forbidden_naming(refused, "tenants:admin")
    assert await key_count(harness, tenant) == 1

    platform = await harness.key(tenant, Role.ADMIN, platform=True)
    granted = await post_key(
        harness, platform.secret, role="admin", scopes=["tenants:admin", "keys:manage"]
    )
    assert granted.status_code == 201, granted.text
    assert sorted(granted.json()["scopes"]) == ["keys:manage", "tenants:admin"]
    listed = await harness.http.get("/v1/admin/tenants", headers=bearer(granted.json()["key"]))
    assert listed.status_code == 200, listed.text

    # A platform key's ordinary keys do not inherit the platform scope.
    plain = await post_key(harness, platform.secret, role="admin")
    assert plain.status_code == 201, plain.text
    assert "tenants:admin" not in plain.json()["scopes"]
    assert sorted(plain.json()["scopes"]) == sorted(s.value for s in ROLE_SCOPES[Role.ADMIN])


@pytest.mark.parametrize("scopes", [["events:wrote"], ["events:write", "root"], ["*"], [""]])
async def test_an_unknown_scope_is_422_naming_the_valid_ones(
    harness: Harness, scopes: list[str]
) -> None:
    tenant = await harness.tenant()
    admin = await harness.key(tenant, Role.ADMIN)
    response = await post_key(harness, admin.secret, role="operator", scopes=scopes)
    body = assert_problem(response, 422)
    assert "events:write" in body["detail"]
    assert await key_count(harness, tenant) == 1


async def test_an_unknown_role_is_422(harness: Harness) -> None:
    tenant = await harness.tenant()
    admin = await harness.key(tenant, Role.ADMIN)
    response = await post_key(harness, admin.secret, role="owner")
    assert_problem(response, 422)


@pytest.mark.parametrize(
    ("victim_role", "victim_scopes", "victim_platform", "named"),
    [
        pytest.param(Role.ADMIN, None, False, "tokens:detokenize", id="full-admin"),
        pytest.param(Role.ADMIN, ["keys:manage"], True, "tenants:admin", id="platform-key"),
    ],
)
async def test_a_lesser_key_cannot_rotate_a_stronger_one(
    harness: Harness,
    victim_role: Role,
    victim_scopes: list[str] | None,
    victim_platform: bool,
    named: str,
) -> None:
    tenant = await harness.tenant()
    victim = await harness.key(tenant, victim_role, scopes=victim_scopes, platform=victim_platform)
    lesser = await harness.key(tenant, Role.ADMIN, scopes=["keys:manage"], name="lesser")
    response = await harness.http.post(
        f"/v1/keys/{victim.record.id}/rotate",
        json={"grace_period_seconds": 0},
        headers=bearer(lesser.secret),
    )
    assert_forbidden_naming(response, named)
    record = await harness.state.keys.get(tenant.id, victim.record.id)
    assert record.replaced_by is None
    assert record.expires_at is None
    assert await key_count(harness, tenant) == 2


async def test_a_narrowed_key_can_rotate_a_key_within_its_scopes(harness: Harness) -> None:
    tenant = await harness.tenant()
    manager = await harness.key(tenant, Role.ADMIN, scopes=["keys:manage", "events:write"])
    writer = await harness.key(tenant, Role.OPERATOR, scopes=["events:write"])
    response = await harness.http.post(
        f"/v1/keys/{writer.record.id}/rotate", headers=bearer(manager.secret)
    )
    assert response.status_code == 201, response.text
    assert response.json()["scopes"] == ["events:write"]
    assert response.json()["role"] == "operator"


async def test_a_rotated_platform_key_stays_a_platform_key(harness: Harness) -> None:
    tenant = await harness.tenant()
    platform = await harness.key(tenant, Role.ADMIN, platform=True)
    response = await harness.http.post(
        f"/v1/keys/{platform.record.id}/rotate",
        json={"grace_period_seconds": 0},
        headers=bearer(platform.secret),
    )
    assert response.status_code == 201, response.text
    assert "tenants:admin" in response.json()["scopes"]
    assert response.json()["role"] == "admin"
    listed = await harness.http.get("/v1/admin/tenants", headers=bearer(response.json()["key"]))
    assert listed.status_code == 200, listed.text
