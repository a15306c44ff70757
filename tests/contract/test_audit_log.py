"""The ``AuditLog`` contract, on every backend (``sqlite``, ``postgres``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from contract_support import ManualClock, OpenStore

from strongroom.adapters.store import Store
from strongroom.crypto.signing import Signer
from strongroom.domain import merkle
from strongroom.domain.audit import GENESIS_PREV, AuditEntry
from strongroom.domain.topics import AUDIT, PLATFORM_TENANT
from strongroom.errors import Conflict, NotFound
from strongroom.ports import AuditQuery
from strongroom.services.audit import AuditTrail


def entry(n: int, tenant: str | None = "t1", action: str = "key.created") -> AuditEntry:
    return AuditEntry(action=action, actor=f"actor-{n}", tenant=tenant, details={"n": n})


@pytest.fixture
def trail(store: Store, tmp_path: Path, clock: ManualClock) -> AuditTrail:
    return AuditTrail(store.audit, Signer.load_or_create(tmp_path / "audit.key"), clock)


async def leaves(store: Store) -> list[bytes]:
    return [row.leaf for row in await store.audit.scan(None, 10_000)]


async def test_appends_get_consecutive_seqs_chained_to_the_one_before(store: Store) -> None:
    first = await store.audit.append([entry(0), entry(1)])
    second = await store.audit.append([entry(2, tenant=None)])
    records = [*first, *second]
    assert [record.seq for record in records] == [0, 1, 2]
    assert records[0].prev == GENESIS_PREV
    assert [record.prev for record in records[1:]] == [record.leaf for record in records[:-1]]
    assert all(record.leaf == merkle.leaf_hash(record.data) for record in records)
    assert await store.audit.size() == 3
    assert await store.audit.leaf(1) == records[1].leaf
    assert await store.audit.append([]) == []


async def test_records_are_published_on_the_audit_topic(store: Store) -> None:
    await store.audit.append([entry(0), entry(1, tenant=None)])
    (tenant_copy,) = await store.log.read(AUDIT, tenant="t1", after=None, limit=10)
    (platform_copy,) = await store.log.read(AUDIT, tenant=PLATFORM_TENANT, after=None, limit=10)
    assert (tenant_copy.record_id, tenant_copy.key) == ("audit:0", "key.created")
    assert platform_copy.record_id == "audit:1"
    (record,) = await store.audit.query(AuditQuery(tenant="t1"))
    assert tenant_copy.payload == record.data


async def test_queries_filter_and_page(store: Store, clock: ManualClock) -> None:
    await store.audit.append([entry(n, tenant="t1" if n % 2 else "t2") for n in range(6)])
    clock.advance(10)
    await store.audit.append([entry(6, action="tenant.erased")])
    t1 = await store.audit.query(AuditQuery(tenant="t1"))
    assert [record.seq for record in t1] == [1, 3, 5, 6]
    assert [r.seq for r in await store.audit.query(AuditQuery(tenant="t1", after=3, limit=2))] == [
        5,
        6,
    ]
    assert [r.seq for r in await store.audit.query(AuditQuery(action="tenant.erased"))] == [6]
    assert [r.seq for r in await store.audit.query(AuditQuery(actor="actor-2"))] == [2]
    assert t1[0].entry.details == {"n": 1}


async def test_roots_and_proofs_verify(store: Store) -> None:
    for n in range(13):
        await store.audit.append([entry(n)])
    hashes = await leaves(store)
    for size in (1, 2, 5, 8, 13):
        root = await store.audit.root(size)
        assert root == merkle.root_from_leaf_hashes(hashes[:size])
        for seq in range(size):
            proof = await store.audit.inclusion_proof(seq, size)
            merkle.verify_inclusion(seq, size, hashes[seq], proof, root)
    for first, second in ((1, 13), (4, 13), (5, 8), (7, 7)):
        proof = await store.audit.consistency_proof(first, second)
        merkle.verify_consistency(
            first, second, await store.audit.root(first), await store.audit.root(second), proof
        )


async def test_sizes_outside_the_tree_are_not_found(store: Store) -> None:
    await store.audit.append([entry(0), entry(1)])
    for attempt in (
        store.audit.root(3),
        store.audit.root(0),
        store.audit.inclusion_proof(2, 2),
        store.audit.inclusion_proof(0, 3),
        store.audit.consistency_proof(0, 2),
        store.audit.consistency_proof(1, 3),
        store.audit.leaf(2),
    ):
        with pytest.raises(NotFound):
            await attempt


async def test_checkpoints_sign_only_a_grown_tree(store: Store, trail: AuditTrail) -> None:
    assert await trail.checkpoint() is None
    await store.audit.append([entry(0), entry(1), entry(2)])
    signed = await trail.checkpoint()
    assert signed is not None
    assert signed.checkpoint.tree_size == 3
    assert signed.checkpoint.root_hash == await store.audit.root(3)
    assert trail.check_signature(signed)
    assert await trail.checkpoint() is None
    await store.audit.append([entry(3)])
    assert (await trail.checkpoint()) is not None
    assert [c.checkpoint.tree_size for c in await store.audit.checkpoints()] == [3, 4]
    assert (await trail.verify()).ok


async def test_pruning_keeps_the_tree_and_moves_the_horizon(
    store: Store, trail: AuditTrail
) -> None:
    assert (await store.audit.horizon()).size == 0
    await store.audit.append([entry(n) for n in range(10)])
    hashes = await leaves(store)
    await trail.checkpoint()
    await store.audit.append([entry(10)])
    with pytest.raises(Conflict):
        await store.audit.prune(11)
    assert await store.audit.prune(6) == 6
    assert await store.audit.prune(4) == 0
    assert await store.audit.prune(6) == 0
    horizon = await store.audit.horizon()
    assert (horizon.size, horizon.prev_leaf) == (6, hashes[5])
    assert merkle.CompactRange.from_state(6, horizon.edge).root() == merkle.root_from_leaf_hashes(
        hashes[:6]
    )
    assert await store.audit.size() == 11
    assert [row.seq for row in await store.audit.scan(None, 100)] == [6, 7, 8, 9, 10]
    # Proofs still reach pruned leaves: the tree's nodes are never deleted.
    root = await store.audit.root(10)
    merkle.verify_inclusion(0, 10, hashes[0], await store.audit.inclusion_proof(0, 10), root)
    (record,) = await store.audit.append([entry(11)])
    assert record.seq == 11
    assert (await trail.verify()).ok


async def test_two_gateways_appending_at_once_keep_one_valid_chain(
    open_test_store: OpenStore, tmp_path: Path, clock: ManualClock
) -> None:
    one, two = await open_test_store(), await open_test_store()
    signer = Signer.load_or_create(tmp_path / "audit.key")
    trails = [AuditTrail(gateway.audit, signer, clock) for gateway in (one, two)]
    appended, _ = await asyncio.gather(
        asyncio.gather(
            *(
                gateway.audit.append([entry(n), entry(n + 1000)])
                for n in range(25)
                for gateway in (one, two)
            )
        ),
        asyncio.gather(*(trail.checkpoint() for trail in trails for _ in range(3))),
    )
    assert sorted(record.seq for batch in appended for record in batch) == list(range(100))
    for first, second in appended:
        assert second.seq == first.seq + 1
        assert second.prev == first.leaf
    for gateway in (one, two):
        assert await gateway.audit.size() == 100
    await trails[0].checkpoint()
    await trails[1].checkpoint()
    verification = await trails[1].verify()
    assert verification.ok, verification.finding
    assert verification.records == 100
    hashes = await leaves(one)
    assert await two.audit.root(100) == merkle.root_from_leaf_hashes(hashes)
    assert len(await one.log.read(AUDIT, tenant="t1", after=None, limit=1000)) == 100
