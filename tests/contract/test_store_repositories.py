"""The relational repositories behave alike on every backend (``sqlite``, ``postgres``),
above all under concurrency, where PostgreSQL does not serialize writers as SQLite does."""

from __future__ import annotations

import asyncio
import secrets

import pytest
from contract_support import OpenStore

from strongroom.adapters.store import Store
from strongroom.crypto.envelope import DataKey, SealContext, new_data_key_material
from strongroom.domain.access import Role
from strongroom.domain.tenancy import ApiKeyRecord, Tenant, TenantStatus, new_tenant_id
from strongroom.errors import Conflict
from strongroom.ports import CardToken, DataKeyRecord, DataKeyState, SealedSecret, UsageRow

NOW = 1_800_000_000.0


def tenant(name: str) -> Tenant:
    return Tenant(new_tenant_id(), name, TenantStatus.ACTIVE, NOW, NOW)


def api_key(tenant_id: str, key_id: str | None = None) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=key_id or "key_" + secrets.token_hex(6),
        tenant_id=tenant_id,
        name="test",
        role=Role.OPERATOR,
        narrowed_to=None,
        platform=False,
        mode="live",
        secret_hash=secrets.token_bytes(32),
        created_at=NOW,
    )


def sealed(dek_id: str = "dek_test") -> str:
    key = DataKey(dek_id, 1, new_data_key_material())
    return key.seal(b"sealed test value", SealContext("t1", "vault", "number", "r1"))


def card(token: str, fingerprint: bytes) -> CardToken:
    return CardToken(
        token=token, tenant="t1", fingerprint=fingerprint, sealed_number=sealed(), last4="0000",
        bin6="400000", brand="visa", exp_month=12, exp_year=2030, created_at=NOW,
    )  # fmt: skip


async def test_tenants_are_unique_by_name_and_erased_to_a_tombstone(store: Store) -> None:
    acme = tenant("acme")
    await store.tenants.create(acme)
    with pytest.raises(Conflict):
        await store.tenants.create(tenant("acme"))
    assert await store.tenants.find("acme") == acme
    assert await store.tenants.find(acme.id) == acme
    others = [tenant(f"other-{n}") for n in range(3)]
    for other in others:
        await store.tenants.create(other)
    ids = sorted(t.id for t in [acme, *others])
    first = await store.tenants.list(after=None, limit=2)
    rest = await store.tenants.list(after=first[-1].id, limit=10)
    assert [t.id for t in first + rest] == ids
    suspended = await store.tenants.set_status(acme.id, TenantStatus.SUSPENDED, NOW + 1)
    assert suspended is not None
    assert suspended.status == TenantStatus.SUSPENDED
    await store.keys.create(api_key(acme.id))
    await store.tenants.erase(acme.id, NOW + 2)
    erased = await store.tenants.get(acme.id)
    assert erased is not None
    assert (erased.status, erased.name) == (TenantStatus.ERASED, acme.id)
    assert await store.keys.list(acme.id, after=None, limit=10) == []
    assert await store.tenants.set_status("ten_missing", TenantStatus.ACTIVE, NOW) is None


async def test_concurrent_tenants_with_one_name_create_one(open_test_store: OpenStore) -> None:
    one, two = await open_test_store(), await open_test_store()
    outcomes = await asyncio.gather(
        *(gateway.tenants.create(tenant("same")) for gateway in (one, two) for _ in range(5)),
        return_exceptions=True,
    )
    assert sum(outcome is None for outcome in outcomes) == 1
    assert all(isinstance(o, Conflict) for o in outcomes if o is not None), outcomes


async def test_a_key_rotates_once_and_revokes_once(
    store: Store, open_test_store: OpenStore
) -> None:
    owner = tenant("acme")
    await store.tenants.create(owner)
    old = api_key(owner.id)
    await store.keys.create(old)
    other = await open_test_store()
    rotations = await asyncio.gather(
        *(
            gateway.keys.rotate(old.id, api_key(owner.id), NOW + 60)
            for gateway in (store, other)
            for _ in range(4)
        )
    )
    assert rotations.count(True) == 1
    stored = await store.keys.get(old.id)
    assert stored is not None
    assert stored.replaced_by is not None
    assert stored.expires_at == NOW + 60
    assert len(await store.keys.list(owner.id, after=None, limit=10)) == 2
    assert await store.keys.revoke(old.id, NOW) is True
    assert await store.keys.revoke(old.id, NOW) is False
    await store.keys.touch({old.id: NOW + 5})
    await store.keys.touch({old.id: NOW + 1})
    touched = await store.keys.get(old.id)
    assert touched is not None
    assert touched.last_used_at == NOW + 5
    assert await store.keys.any_exist()


async def test_usage_adds_up_under_concurrency(store: Store, open_test_store: OpenStore) -> None:
    other = await open_test_store()
    row = UsageRow("t1", "2026-11-22", "events.ingest", 1, 10)
    await asyncio.gather(
        *(gateway.usage.add([row]) for gateway in (store, other) for _ in range(20))
    )
    await store.usage.add([UsageRow("t1", "2026-11-23", "events.ingest", 2, 5)])
    assert await store.usage.query("t1", "2026-11-22", "2026-11-23") == [
        UsageRow("t1", "2026-11-22", "events.ingest", 40, 400),
        UsageRow("t1", "2026-11-23", "events.ingest", 2, 5),
    ]
    assert await store.usage.query("t2", "2026-11-22", "2026-11-23") == []


async def test_data_keys_are_never_reserved_past_their_limit(
    store: Store, open_test_store: OpenStore
) -> None:
    other = await open_test_store()
    record = DataKeyRecord("dek_1", "t1", "wrapped", 1, NOW, DataKeyState.ACTIVE, 0, 100)
    await store.data_keys.create(record)
    reserved = await asyncio.gather(
        *(gateway.data_keys.reserve("dek_1", 3) for gateway in (store, other) for _ in range(25))
    )
    granted = [total for total in reserved if total is not None]
    assert len(granted) == 33
    assert sorted(granted) == list(range(3, 100, 3))
    stored = await store.data_keys.get("dek_1")
    assert stored is not None
    assert stored.reserved == 99
    await store.data_keys.create(DataKeyRecord("dek_2", "t1", "w2", 1, NOW + 1, "active", 0, 100))
    retired = await store.data_keys.get("dek_1")
    assert retired is not None
    assert retired.state == DataKeyState.RETIRED
    assert await store.data_keys.reserve("dek_1", 1) is None
    active = await store.data_keys.active("t1")
    assert active is not None
    assert active.dek_id == "dek_2"


async def test_racing_token_inserts_for_one_card_return_the_winner(
    store: Store, open_test_store: OpenStore
) -> None:
    other = await open_test_store()
    fingerprint = secrets.token_bytes(32)
    stored = await asyncio.gather(
        *(
            gateway.tokens.insert(card(f"tok_{gateway is store}{n}", fingerprint))
            for gateway in (store, other)
            for n in range(5)
        )
    )
    assert len({token.token for token in stored}) == 1
    found = await store.tokens.by_fingerprint("t1", fingerprint)
    assert found is not None
    assert found.token == stored[0].token
    assert await store.tokens.get("t2", found.token) is None
    assert await store.tokens.delete("t1", found.token) is True
    assert await store.tokens.delete("t1", found.token) is False


async def test_tenant_secrets_and_settings_are_replaced_under_concurrency(
    store: Store, open_test_store: OpenStore, store_url: str, request: pytest.FixtureRequest
) -> None:
    other = await open_test_store()
    await asyncio.gather(
        *(
            gateway.secrets.put(SealedSecret("t1", "signing", sealed(), NOW + n))
            for gateway in (store, other)
            for n in range(5)
        ),
        *(
            gateway.tenant_settings.put("t1", {"n": n}, NOW + n)
            for gateway in (store, other)
            for n in range(5)
        ),
    )
    assert await store.secrets.get("t1", "signing") is not None
    assert set(await store.tenant_settings.get("t1")) == {"n"}
