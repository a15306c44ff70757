"""``DataKeyService`` on a real SQLite store: one data key per tenant, seal counts
reserved before use, replacement before ``max_seals``, and the DEK cache during a
KMS outage (a real OpenBao dev server, stopped mid-test).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import SecretStr
from vault_crypto_support import (
    EXP_YEAR,
    ConnectVault,
    ControlledKeyManager,
    ManualClock,
    card_body,
    context,
    open_state,
    uses_by_key,
    visa_numbers,
)

from strongroom.adapters.kms.local import LocalKeyManager
from strongroom.adapters.store import Store
from strongroom.crypto.envelope import read_header
from strongroom.domain.topics import RAW, TOKENIZED
from strongroom.errors import DataUnreadable, KeyManagerUnavailable
from strongroom.ports import DataKeyState, KeyManager
from strongroom.services.data_keys import LEASE, DataKeyService
from support import card_free_event
from support_app import make_settings
from support_openbao import OpenBaoServer, new_key_name

TTL = 60.0


def service(
    store: Store,
    key_manager: KeyManager,
    clock: ManualClock,
    *,
    cache_seconds: float = TTL,
    cache_size: int = 100,
    max_seals: int = 2**30,
) -> DataKeyService:
    return DataKeyService(
        store.data_keys,
        key_manager,
        clock,
        cache_seconds=cache_seconds,
        cache_size=cache_size,
        max_seals=max_seals,
    )


async def total_data_keys(store: Store) -> int:
    return sum((await store.data_keys.count_by_version()).values())


# -- one data key per tenant ------------------------------------------------------------


async def test_the_first_seal_creates_one_data_key_per_tenant(
    store: Store, local_kms: LocalKeyManager, clock: ManualClock
) -> None:
    data_keys = service(store, local_kms, clock)
    assert await store.data_keys.of_tenant("ten_a") == []

    sealed_a = [await data_keys.seal(b"a%d" % i, context("ten_a", i)) for i in range(5)]
    sealed_b = [await data_keys.seal(b"b%d" % i, context("ten_b", i)) for i in range(3)]

    (key_a,) = await store.data_keys.of_tenant("ten_a")
    (key_b,) = await store.data_keys.of_tenant("ten_b")
    assert key_a.dek_id != key_b.dek_id
    assert uses_by_key(sealed_a) == {key_a.dek_id: 5}
    assert uses_by_key(sealed_b) == {key_b.dek_id: 3}
    for record in (key_a, key_b):
        assert record.state == DataKeyState.ACTIVE
        assert record.kek_version == 1
        assert record.wrapped.startswith("lk1:v1:")
        assert record.created_at == clock.now()
    assert await store.data_keys.tenants() == ["ten_a", "ten_b"]
    # Only the wrapping is stored; it unwraps to a key that opens the values.
    material = await local_kms.unwrap(key_a.wrapped)
    assert material.hex() not in key_a.wrapped


async def test_tenants_cannot_open_each_others_values(
    store: Store, local_kms: LocalKeyManager, clock: ManualClock
) -> None:
    data_keys = service(store, local_kms, clock)
    sealed_a = await data_keys.seal(b"for a", context("ten_a", 1))
    sealed_b = await data_keys.seal(b"for b", context("ten_b", 1))

    # The same service (keys cached) and a fresh one (keys loaded from the store).
    for opener in (data_keys, service(store, local_kms, clock)):
        assert await opener.open(sealed_a, context("ten_a", 1)) == b"for a"
        assert await opener.open(sealed_b, context("ten_b", 1)) == b"for b"
        with pytest.raises(DataUnreadable):
            await opener.open(sealed_a, context("ten_b", 1))
        with pytest.raises(DataUnreadable):
            await opener.open(sealed_b, context("ten_a", 1))
    # B's own data key never opens A's value, even relabelled with B's key id.
    b_key = read_header(sealed_b).dek_id
    relabelled = sealed_a.replace(read_header(sealed_a).dek_id, b_key, 1)
    with pytest.raises(DataUnreadable):
        await service(store, local_kms, clock).open(relabelled, context("ten_b", 1))


async def test_an_unknown_data_key_or_garbage_is_unreadable(
    store: Store, local_kms: LocalKeyManager, clock: ManualClock
) -> None:
    data_keys = service(store, local_kms, clock)
    sealed = await data_keys.seal(b"x", context("ten_a", 1))

    for value in (
        sealed.replace(read_header(sealed).dek_id, "dk_unknown", 1),
        sealed[:-3],
        "sr1:v1:dk_unknown:AAAA",
        "not sealed",
    ):
        with pytest.raises(DataUnreadable) as raised:
            await data_keys.open(value, context("ten_a", 1))
        assert raised.value.detail == "The sealed value cannot be opened."


async def sealed_elsewhere(
    store: Store, kms: ControlledKeyManager, clock: ManualClock
) -> tuple[DataKeyService, list[str]]:
    """Twenty values sealed by one service, and a second service that has cached nothing."""
    writer = service(store, kms, clock)
    sealed = [await writer.seal(b"%d" % i, context("ten_a", i)) for i in range(20)]
    kms.unwraps = 0
    return service(store, kms, clock), sealed


async def test_unwrapped_data_keys_are_cached(
    store: Store, local_kms: LocalKeyManager, clock: ManualClock
) -> None:
    kms = ControlledKeyManager(local_kms)
    reader, sealed = await sealed_elsewhere(store, kms, clock)

    for i, value in enumerate(sealed):
        assert await reader.open(value, context("ten_a", i)) == b"%d" % i

    assert kms.unwraps == 1
    assert kms.generated == 1


async def test_concurrent_opens_of_an_uncached_key_share_one_read_and_one_unwrap(
    store: Store, local_kms: LocalKeyManager, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    kms = ControlledKeyManager(local_kms)
    reader, sealed = await sealed_elsewhere(store, kms, clock)
    reads: list[str] = []
    get = store.data_keys.get

    async def counted_get(dek_id: str) -> object:
        reads.append(dek_id)
        return await get(dek_id)

    monkeypatch.setattr(store.data_keys, "get", counted_get)

    opened = await asyncio.gather(
        *(reader.open(value, context("ten_a", i)) for i, value in enumerate(sealed))
    )

    assert opened == [b"%d" % i for i in range(20)]
    assert len(reads) == 1
    assert kms.unwraps == 1


# -- seal counts ----------------------------------------------------------------------------


async def test_seal_counts_are_reserved_durably_before_use(
    store: Store, local_kms: LocalKeyManager, clock: ManualClock
) -> None:
    first = service(store, local_kms, clock)
    count = LEASE + 5
    sealed = [await first.seal(b"%d" % i, context("ten_a", i)) for i in range(count)]

    (record,) = await store.data_keys.of_tenant("ten_a")
    assert uses_by_key(sealed) == {record.dek_id: count}
    assert record.reserved >= count
    # Leases are reserved whole: the second one was taken when the first ran out.
    assert record.reserved == 2 * LEASE

    # Another instance (a restart, or a second gateway) reserves a lease of its own
    # beyond everything reserved so far, on the same key.
    second = service(store, local_kms, clock)
    more = await second.seal(b"second", context("ten_a", count))
    after = await store.data_keys.get(record.dek_id)
    assert after is not None
    assert read_header(more).dek_id == record.dek_id
    assert after.reserved == record.reserved + LEASE

    # The first instance keeps sealing inside its own lease: nothing new is reserved.
    await first.seal(b"first again", context("ten_a", count + 1))
    assert (await store.data_keys.get(record.dek_id)) == after
    assert await second.open(sealed[0], context("ten_a", 0)) == b"0"


async def test_a_data_key_is_replaced_before_max_seals(
    store: Store, local_kms: LocalKeyManager, clock: ManualClock
) -> None:
    max_seals = 1000  # the smallest STRONGROOM_DATA_KEY_MAX_SEALS allows, below LEASE
    data_keys = service(store, local_kms, clock, max_seals=max_seals)

    sealed = [await data_keys.seal(b"%d" % i, context("ten_a", i)) for i in range(2500)]

    # In the order the keys were first used (they share one created_at: the clock stood still).
    order = list(dict.fromkeys(read_header(value).dek_id for value in sealed))
    by_id = {r.dek_id: r for r in await store.data_keys.of_tenant("ten_a")}
    records = [by_id[dek_id] for dek_id in order]
    uses = uses_by_key(sealed)
    assert len(by_id) == 3
    assert [uses[r.dek_id] for r in records] == [1000, 1000, 500]
    # A lease never reaches past max_seals: it is cut to what is left.
    assert [r.reserved for r in records] == [min(LEASE, max_seals)] * 3
    assert all(r.max_seals == max_seals for r in records)
    assert [r.state for r in records] == [DataKeyState.RETIRED] * 2 + [DataKeyState.ACTIVE]
    active = await store.data_keys.active("ten_a")
    assert active is not None
    assert active.dek_id == records[-1].dek_id
    # Everything sealed under a retired key still opens, also through a fresh service.
    fresh = service(store, local_kms, clock)
    for i in (0, 999, 1000, 1999, 2000, 2499):
        assert await fresh.open(sealed[i], context("ten_a", i)) == b"%d" % i


async def test_concurrent_seals_never_pass_max_seals(
    store: Store, local_kms: LocalKeyManager, clock: ManualClock
) -> None:
    data_keys = service(store, local_kms, clock, max_seals=1000)

    sealed = await asyncio.gather(
        *(data_keys.seal(b"%d" % i, context("ten_a", i)) for i in range(2200))
    )

    records = {r.dek_id: r for r in await store.data_keys.of_tenant("ten_a")}
    for dek_id, used in uses_by_key(sealed).items():
        assert used <= records[dek_id].reserved <= records[dek_id].max_seals
    assert await data_keys.open(sealed[2199], context("ten_a", 2199)) == b"2199"


async def test_a_restart_never_reuses_the_rest_of_a_lease(
    store: Store, local_kms: LocalKeyManager, clock: ManualClock
) -> None:
    before = service(store, local_kms, clock, max_seals=1000)
    first = [await before.seal(b"%d" % i, context("ten_a", i)) for i in range(10)]
    (old,) = await store.data_keys.of_tenant("ten_a")
    assert old.reserved == 1000

    # The process ends with 990 seals of its lease unused; a new one cannot know how
    # many were used, and the key has nothing left to reserve, so it takes a new key.
    after = service(store, local_kms, clock, max_seals=1000)
    second = await after.seal(b"after", context("ten_a", 10))

    assert read_header(second).dek_id != old.dek_id
    retired = await store.data_keys.get(old.dek_id)
    assert retired is not None
    assert retired.state == DataKeyState.RETIRED
    assert retired.reserved == 1000
    assert await after.open(first[3], context("ten_a", 3)) == b"3"


async def test_a_seal_waiting_for_the_kms_does_not_outrun_its_reservation(
    store: Store, local_kms: LocalKeyManager, clock: ManualClock
) -> None:
    kms = ControlledKeyManager(local_kms)
    data_keys = service(store, kms, clock, max_seals=1000)
    sealed = [await data_keys.seal(b"%d" % i, context("ten_a", i)) for i in range(999)]
    clock.advance(TTL)  # the cached key expires; one reserved seal is left

    release = kms.hold_next_unwrap()
    waiting = asyncio.create_task(data_keys.seal(b"waiting", context("ten_a", 999)))
    await kms.held.wait()
    # Meanwhile a read of the same key joins that unwrap, and another seal arrives.
    reading = asyncio.create_task(data_keys.open(sealed[0], context("ten_a", 0)))
    meanwhile = asyncio.create_task(data_keys.seal(b"meanwhile", context("ten_a", 1000)))
    await asyncio.sleep(0)
    release.set()
    sealed.extend(await asyncio.gather(waiting, meanwhile))
    assert await reading == b"0"
    assert kms.unwraps == 1

    records = {r.dek_id: r for r in await store.data_keys.of_tenant("ten_a")}
    for dek_id, used in uses_by_key(sealed).items():
        assert used <= records[dek_id].reserved, (used, records[dek_id])


# -- the cache while the KMS is down ------------------------------------------------------


async def test_cached_keys_serve_until_their_ttl_while_the_kms_is_down(
    store: Store,
    clock: ManualClock,
    start_openbao: Callable[[], OpenBaoServer],
    connect_vault: ConnectVault,
) -> None:
    server = start_openbao()
    data_keys = service(store, await connect_vault(server), clock)
    sealed = [await data_keys.seal(b"%d" % i, context("ten_a", i)) for i in range(3)]
    (record,) = await store.data_keys.of_tenant("ten_a")
    assert record.wrapped.startswith("vault:v1:")

    server.stop(timeout=0.2)
    clock.advance(TTL - 0.5)

    assert await data_keys.open(sealed[1], context("ten_a", 1)) == b"1"
    more = await data_keys.seal(b"more", context("ten_a", 3))
    assert read_header(more).dek_id == record.dek_id
    assert await data_keys.open(more, context("ten_a", 3)) == b"more"

    clock.advance(0.5)  # exactly the TTL: the cached key is gone

    with pytest.raises(KeyManagerUnavailable):
        await data_keys.open(sealed[1], context("ten_a", 1))
    with pytest.raises(KeyManagerUnavailable):
        await data_keys.seal(b"too late", context("ten_a", 4))
    # A service that never cached the key cannot open anything either.
    with pytest.raises(KeyManagerUnavailable):
        await service(store, data_keys.key_manager, clock).open(sealed[0], context("ten_a", 0))
    assert await store.data_keys.of_tenant("ten_a") == [record]


async def test_a_new_tenant_cannot_seal_while_the_kms_is_down(
    store: Store,
    clock: ManualClock,
    start_openbao: Callable[[], OpenBaoServer],
    connect_vault: ConnectVault,
) -> None:
    server = start_openbao()
    data_keys = service(store, await connect_vault(server), clock)
    first = await data_keys.seal(b"a", context("ten_a", 0))
    server.stop(timeout=0.2)

    with pytest.raises(KeyManagerUnavailable):
        await data_keys.seal(b"c", context("ten_c", 0))
    with pytest.raises(KeyManagerUnavailable):
        await data_keys.rotate_tenant("ten_a")

    assert await store.data_keys.of_tenant("ten_c") == []
    assert await store.data_keys.tenants() == ["ten_a"]
    assert await total_data_keys(store) == 1
    # The tenant with a cached key is not affected.
    second = await data_keys.seal(b"a", context("ten_a", 1))
    assert read_header(second).dek_id == read_header(first).dek_id


async def test_nothing_is_stored_when_the_kms_is_down_at_the_first_card(
    tmp_path: Path, start_openbao: Callable[[], OpenBaoServer]
) -> None:
    server = start_openbao()
    settings = make_settings(
        tmp_path,
        kms_url=server.kms_url(new_key_name()),
        vault_token=SecretStr(server.token),
    )
    async with open_state(settings) as state:
        tenant = await state.tenants.create("kms-down")
        number, other = visa_numbers(2, seed=7)
        card = state.vault.validate(number, 12, EXP_YEAR)
        server.stop(timeout=0.2)

        with pytest.raises(KeyManagerUnavailable):
            await state.vault.tokenize(tenant.id, card)
        with pytest.raises(KeyManagerUnavailable):
            await state.ingest.ingest(tenant.id, card_body(card_free_event(), other))

        assert (
            await state.store.tokens.by_fingerprint(
                tenant.id, state.vault.fingerprint(tenant.id, number)
            )
            is None
        )
        assert await state.store.data_keys.of_tenant(tenant.id) == []
        for topic in (TOKENIZED, RAW):
            assert await state.log.read(topic, tenant=tenant.id, after=None, limit=10) == []


async def test_the_cache_size_bound_evicts_the_oldest_key(
    store: Store,
    clock: ManualClock,
    start_openbao: Callable[[], OpenBaoServer],
    connect_vault: ConnectVault,
) -> None:
    server = start_openbao()
    data_keys = service(store, await connect_vault(server), clock, cache_size=2)
    sealed = {
        tenant: await data_keys.seal(tenant.encode(), context(tenant, 0))
        for tenant in ("ten_a", "ten_b", "ten_c")
    }
    server.stop(timeout=0.2)

    # Only two keys fit: the first one loaded was evicted, the later two still serve.
    with pytest.raises(KeyManagerUnavailable):
        await data_keys.open(sealed["ten_a"], context("ten_a", 0))
    for tenant in ("ten_b", "ten_c"):
        assert await data_keys.open(sealed[tenant], context(tenant, 0)) == tenant.encode()
