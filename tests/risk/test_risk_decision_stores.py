"""Decision stores: one behaviour on every backend (ids ``memory``, ``sqlite``, ``postgres``).

The SQLite and PostgreSQL stores are opened the way the gateway opens them
(``open_store``), so they sit behind the cache of recent decisions and share
their commits with the database's event log. PostgreSQL is skipped, naming it,
when the server is unreachable (failed instead with ``CI=true``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from risk_support import T0, ManualClock, RecordingLog, hash_ip, request

from strongroom.adapters.store import Store, open_store
from strongroom.domain.risk import DecisionRecord
from strongroom.domain.topics import RISK_DECISIONS
from strongroom.errors import StorageUnavailable
from strongroom.ports import EventLog
from strongroom.services.risk import RiskService
from strongroom.services.risk_cache import CachedDecisionStore
from strongroom.services.risk_retention import DecisionPruner
from strongroom.services.risk_stores import (
    DecisionJournal,
    MemoryDecisionStore,
    MemoryPolicyStore,
)
from strongroom.services.velocity import MemorySeenCards, MemoryVelocityCounter
from support_app import make_settings
from support_database import fresh_database

TENANT = "ten_stores"
OTHER = "ten_other"
DAY = 86_400.0


@dataclass
class Backend:
    decisions: DecisionJournal
    log: EventLog | None
    clock: ManualClock


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    clock = ManualClock(T0)
    if request.param == "memory":
        yield Backend(MemoryDecisionStore(), None, clock)
        return
    store: Store
    if request.param == "sqlite":
        store = await open_store(make_settings(tmp_path, database_url=None), clock=clock)
        try:
            yield Backend(store.decisions, store.log, clock)
        finally:
            await store.aclose()
        return
    async with fresh_database() as url:
        store = await open_store(make_settings(tmp_path, database_url=url), clock=clock)
        try:
            yield Backend(store.decisions, store.log, clock)
        finally:
            await store.aclose()


def service(backend: Backend) -> RiskService:
    return RiskService(
        policies=MemoryPolicyStore(),
        decisions=backend.decisions,
        velocity=MemoryVelocityCounter(),
        seen_cards=MemorySeenCards(),
        hash_ip=hash_ip,
        log=backend.log,
    )


async def decide(backend: Backend, transaction_id: str, tenant: str = TENANT) -> DecisionRecord:
    result = await service(backend).evaluate(tenant, request(transaction_id), backend.clock.now())
    return result.record


async def published(backend: Backend, tenant: str = TENANT) -> list[str]:
    assert backend.log is not None
    records = await backend.log.read(RISK_DECISIONS, tenant=tenant, after=None, limit=1000)
    return [record.record_id for record in records]


async def test_concurrent_puts_of_one_transaction_store_one_decision(backend: Backend) -> None:
    first = await decide(backend, "t-probe")
    rivals = [
        replace(first, trace_id=f"trc_{n:024d}", transaction_id="t-race", idempotency_key="k")
        for n in range(12)
    ]
    stored = await asyncio.gather(*(backend.decisions.put(rival) for rival in rivals))
    assert len({record.trace_id for record in stored}) == 1
    winner = stored[0]
    assert winner.trace_id in {rival.trace_id for rival in rivals}
    assert await backend.decisions.find(TENANT, transaction_id="t-race", idempotency_key=None) == (
        winner
    )
    # Another transaction id under the same key finds the keyed decision first.
    assert await backend.decisions.find(TENANT, transaction_id="t-new", idempotency_key="k") == (
        winner
    )
    assert await backend.decisions.get(OTHER, winner.trace_id) is None


async def test_a_decision_is_on_the_stream_when_the_evaluation_returns(backend: Backend) -> None:
    if backend.log is None:
        pytest.skip("the memory store publishes through the service's log")
    records = await asyncio.gather(*(decide(backend, f"t{n}") for n in range(20)))
    assert sorted(await published(backend)) == sorted(record.trace_id for record in records)
    stored = await backend.log.read(RISK_DECISIONS, tenant=TENANT, after=None, limit=1)
    payload = json.loads(stored[0].payload)
    assert payload["trace_id"] == stored[0].record_id
    assert payload["inputs"]["card_token"] == "tok_card1"


async def test_prune_deletes_only_decisions_older_than_the_cutoff(backend: Backend) -> None:
    old = [await decide(backend, f"old{n}") for n in range(3)]
    kept_elsewhere = await decide(backend, "old-other", tenant=OTHER)
    backend.clock.advance(10 * DAY)
    new = [await decide(backend, f"new{n}") for n in range(2)]
    assert await backend.decisions.prune(T0 + DAY) == 4
    for record in [*old, kept_elsewhere]:
        assert await _stored(backend, record) is None
    for record in new:
        assert await _stored(backend, record) == record
    assert await backend.decisions.prune(T0 + DAY) == 0


async def _stored(backend: Backend, record: DecisionRecord) -> DecisionRecord | None:
    """The decision as the store has it, past any cache in front of it."""
    decisions = backend.decisions
    if isinstance(decisions, CachedDecisionStore):
        decisions = decisions.store
    return await decisions.get(record.tenant, record.trace_id)


async def test_erase_tenant_deletes_its_decisions_and_no_one_elses(backend: Backend) -> None:
    mine = [await decide(backend, f"t{n}") for n in range(5)]
    theirs = await decide(backend, "t0", tenant=OTHER)
    assert await backend.decisions.erase_tenant(TENANT) == 5
    for record in mine:
        assert await backend.decisions.get(TENANT, record.trace_id) is None
        assert (
            await backend.decisions.find(
                TENANT, transaction_id=record.transaction_id, idempotency_key=None
            )
            is None
        )
    assert await backend.decisions.get(OTHER, theirs.trace_id) == theirs
    assert await backend.decisions.erase_tenant(TENANT) == 0


async def test_the_pruner_deletes_in_the_background(backend: Backend) -> None:
    old = await decide(backend, "old")
    backend.clock.advance(31 * DAY)
    fresh = await decide(backend, "fresh")
    pruner = DecisionPruner(
        backend.decisions,
        backend.clock,
        retention_seconds=30 * DAY,
        interval_seconds=0.01,
        first_delay_seconds=0,
    )
    pruner.start()
    try:
        for _ in range(500):
            if pruner.pruned:
                break
            await asyncio.sleep(0.01)
    finally:
        await pruner.aclose()
    assert pruner.pruned == 1
    assert await _stored(backend, old) is None
    assert await _stored(backend, fresh) == fresh


async def test_a_failing_prune_is_reported_and_tried_again() -> None:
    class Failing(MemoryDecisionStore):
        calls = 0

        async def prune(self, before: float) -> int:
            self.calls += 1
            if self.calls == 1:
                raise StorageUnavailable("down")
            return await super().prune(before)

    store = Failing()
    failures: list[str] = []
    pruner = DecisionPruner(
        store,
        ManualClock(T0),
        retention_seconds=DAY,
        interval_seconds=0.01,
        first_delay_seconds=0,
        on_failure=lambda error: failures.append(error.code),
    )
    pruner.start()
    try:
        for _ in range(500):
            if store.calls >= 2:
                break
            await asyncio.sleep(0.01)
    finally:
        await pruner.aclose()
    assert failures == ["storage_unavailable"]
    assert store.calls >= 2
    with pytest.raises(ValueError, match="retention_seconds"):
        DecisionPruner(store, ManualClock(T0), retention_seconds=0)


async def test_with_the_stream_elsewhere_decisions_are_stored_then_appended(
    tmp_path: Path,
) -> None:
    """A broker stream (here a recording log) is not in the decision's transaction: the
    decision is committed, then appended, and answered only when both are done."""
    clock = ManualClock(T0)
    store = await open_store(make_settings(tmp_path, database_url=None), clock=clock)
    try:
        broker = RecordingLog()
        risk = RiskService(
            policies=MemoryPolicyStore(),
            decisions=store.decisions,
            velocity=MemoryVelocityCounter(),
            seen_cards=MemorySeenCards(),
            hash_ip=hash_ip,
            log=broker,
        )
        assert not store.decisions.publishes_to(broker)
        records = await asyncio.gather(
            *(risk.evaluate(TENANT, request(f"t{n}"), T0) for n in range(8))
        )
        assert sorted(r.record_id for _, r in broker.appended) == sorted(
            result.record.trace_id for result in records
        )
        # Nothing went to the database's own stream.
        assert await store.log.read(RISK_DECISIONS, tenant=TENANT, after=None, limit=10) == []
        broker.fail_next = 1
        with pytest.raises(StorageUnavailable):
            await risk.evaluate(TENANT, request("t-late"), T0)
        # Stored before the append failed; the retry replays it and publishes it.
        retry = await risk.evaluate(TENANT, request("t-late"), T0)
        assert retry.replayed
        assert broker.appended[-1][1].record_id == retry.record.trace_id
    finally:
        await store.aclose()
