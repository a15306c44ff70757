"""The cache of recent decisions in front of a decision store."""

from __future__ import annotations

from dataclasses import replace

import pytest
from risk_support import T0, hash_ip, request

from strongroom.domain.risk import DecisionRecord
from strongroom.services.risk import RiskService
from strongroom.services.risk_cache import CachedDecisionStore
from strongroom.services.risk_stores import MemoryDecisionStore, MemoryPolicyStore
from strongroom.services.velocity import MemorySeenCards, MemoryVelocityCounter

TENANT = "ten_cache"


class CountingStore(MemoryDecisionStore):
    """A memory store that counts the reads that reach it."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def find(
        self, tenant: str, *, transaction_id: str, idempotency_key: str | None
    ) -> DecisionRecord | None:
        self.reads += 1
        return await super().find(
            tenant, transaction_id=transaction_id, idempotency_key=idempotency_key
        )

    async def get(self, tenant: str, trace_id: str) -> DecisionRecord | None:
        self.reads += 1
        return await super().get(tenant, trace_id)


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def record(transaction_id: str, key: str | None = None) -> DecisionRecord:
    risk = RiskService(
        policies=MemoryPolicyStore(),
        decisions=MemoryDecisionStore(),
        velocity=MemoryVelocityCounter(),
        seen_cards=MemorySeenCards(),
        hash_ip=hash_ip,
    )
    evaluation = await risk.evaluate(TENANT, request(transaction_id, idempotency_key=key), T0)
    return evaluation.record


async def test_a_retry_is_answered_from_memory_and_a_miss_asks_the_store() -> None:
    inner = CountingStore()
    cache = CachedDecisionStore(inner)
    stored = await cache.put(await record("t1", "k1"))
    assert await cache.find(TENANT, transaction_id="t1", idempotency_key="k1") == stored
    assert await cache.find(TENANT, transaction_id="t1", idempotency_key=None) == stored
    assert await cache.get(TENANT, stored.trace_id) == stored
    assert inner.reads == 0
    # Not cached: the store is the truth (another gateway, or before a restart).
    elsewhere = await inner.put(await record("t2"))
    assert await cache.find(TENANT, transaction_id="t2", idempotency_key=None) == elsewhere
    assert inner.reads == 1
    assert await cache.find(TENANT, transaction_id="t3", idempotency_key="k3") is None
    assert inner.reads == 2
    # Under another key, a cached transaction is not taken for the answer: the store decides.
    assert await cache.find(TENANT, transaction_id="t1", idempotency_key="k9") == stored
    assert inner.reads == 3


async def test_the_cache_is_bounded_by_count_and_by_age() -> None:
    ticks = Ticks()
    inner = CountingStore()
    cache = CachedDecisionStore(inner, max_records=2, max_age_seconds=60, monotonic=ticks)
    first, second, third = [await cache.put(await record(f"t{n}")) for n in range(3)]
    assert len(cache) == 2
    assert await cache.get(TENANT, first.trace_id) == first
    assert inner.reads == 1
    ticks.now = 61
    assert await cache.get(TENANT, third.trace_id) == third
    assert inner.reads == 2
    with pytest.raises(ValueError, match="max_records"):
        CachedDecisionStore(inner, max_records=0)
    with pytest.raises(ValueError, match="max_age_seconds"):
        CachedDecisionStore(inner, max_age_seconds=0)
    assert second.trace_id != third.trace_id


async def test_erasing_a_tenant_empties_its_part_of_the_cache() -> None:
    inner = CountingStore()
    cache = CachedDecisionStore(inner)
    mine = await cache.put(await record("t1"))
    theirs = await cache.put(replace(await record("t1"), tenant="ten_other"))
    assert await cache.erase_tenant(TENANT) == 1
    assert await cache.get(TENANT, mine.trace_id) is None
    assert await cache.find(TENANT, transaction_id="t1", idempotency_key=None) is None
    reads = inner.reads
    assert await cache.get("ten_other", theirs.trace_id) == theirs
    assert inner.reads == reads
