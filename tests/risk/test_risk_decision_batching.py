"""The SQLite decision store's batches: one in flight, and a short wait for more behind it.

The writer is the real one on a real file; a spy only records each batch the
store hands over (how many decisions), then passes it on unchanged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from risk_support import T0, ManualClock, hash_ip, request

from strongroom.adapters.sqlite import decisions as decisions_module
from strongroom.adapters.sqlite.decisions import SqliteDecisionStore
from strongroom.adapters.store import Store, open_store
from strongroom.domain.risk import DecisionRecord
from strongroom.services.risk import RiskService
from strongroom.services.risk_stores import MemoryDecisionStore, MemoryPolicyStore
from strongroom.services.velocity import MemorySeenCards, MemoryVelocityCounter
from support_app import make_settings

TENANT = "ten_batches"
#: Long enough that no commit on a busy machine outlasts it, so waits are unmistakable.
LINGER = 1.0


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await open_store(make_settings(tmp_path, database_url=None), clock=ManualClock(T0))
    try:
        yield opened
    finally:
        await opened.aclose()


async def a_decision() -> DecisionRecord:
    service = RiskService(
        policies=MemoryPolicyStore(),
        decisions=MemoryDecisionStore(),
        velocity=MemoryVelocityCounter(),
        seen_cards=MemorySeenCards(),
        hash_ip=hash_ip,
    )
    return (await service.evaluate(TENANT, request("t-template"), T0)).record


def sqlite_journal(store: Store) -> SqliteDecisionStore:
    journal = store.decisions.store  # type: ignore[attr-defined]
    assert isinstance(journal, SqliteDecisionStore)
    return journal


def spy_on_batches(
    journal: SqliteDecisionStore, on_batch: Callable[[int], None] = lambda _: None
) -> list[int]:
    """Sizes of the batches handed to the writer, in order; ``on_batch`` runs as each goes."""
    sizes: list[int] = []
    writer = journal._writer
    submit = writer.submit

    def recording(operation: Any, weight: int = 1) -> Any:
        sizes.append(weight)
        on_batch(len(sizes))
        return submit(operation, weight)

    writer.submit = recording  # type: ignore[method-assign]
    return sizes


def copies(template: DecisionRecord, first: int, count: int) -> list[DecisionRecord]:
    return [
        replace(template, trace_id=f"trc_{n:024d}", transaction_id=f"t-{n}")
        for n in range(first, first + count)
    ]


async def two_waiting_behind_a_first_batch(
    journal: SqliteDecisionStore, template: DecisionRecord
) -> tuple[list[int], list[asyncio.Task[DecisionRecord]]]:
    """Decision 0 goes alone; decisions 1 and 2 are made while it is with the writer.

    Returns the batch sizes so far (a spy that keeps recording) and the tasks
    putting 1 and 2, which are waiting behind it when this returns.
    """
    behind: list[asyncio.Task[DecisionRecord]] = []

    def while_first_in_flight(batch: int) -> None:
        if batch == 1:
            behind.extend(asyncio.create_task(journal.put(r)) for r in copies(template, 1, 2))

    sizes = spy_on_batches(journal, while_first_in_flight)
    await journal.put(copies(template, 0, 1)[0])
    await asyncio.sleep(0)
    return sizes, behind


async def test_a_decision_made_while_the_writer_is_idle_is_handed_over_at_once(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(decisions_module, "LINGER_SECONDS", LINGER)
    journal = sqlite_journal(store)
    sizes = spy_on_batches(journal)
    (record,) = copies(await a_decision(), 0, 1)

    started = time.monotonic()
    await journal.put(record)

    assert sizes == [1]
    assert time.monotonic() - started < LINGER / 2


async def test_decisions_behind_a_batch_in_flight_wait_for_company_then_go_together(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(decisions_module, "LINGER_SECONDS", LINGER)
    journal = sqlite_journal(store)
    template = await a_decision()
    sizes, behind = await two_waiting_behind_a_first_batch(journal, template)
    # The two made meanwhile now wait; one more made during the wait joins them.
    late = asyncio.create_task(journal.put(copies(template, 3, 1)[0]))
    stored = await asyncio.wait_for(asyncio.gather(*behind, late), timeout=LINGER * 5)

    assert sizes == [1, 3]
    assert [record.transaction_id for record in stored] == ["t-1", "t-2", "t-3"]
    for record in stored:
        assert await journal.get(TENANT, record.trace_id) == record


async def test_enough_decisions_waiting_end_the_wait_at_once(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(decisions_module, "LINGER_SECONDS", LINGER)
    monkeypatch.setattr(decisions_module, "LINGER_BELOW", 4)
    journal = sqlite_journal(store)
    template = await a_decision()
    sizes, behind = await two_waiting_behind_a_first_batch(journal, template)
    started = time.monotonic()
    more = [asyncio.create_task(journal.put(r)) for r in copies(template, 3, 2)]
    await asyncio.gather(*behind, *more)

    assert time.monotonic() - started < LINGER / 2
    # The fourth decision waiting ended the wait: the four went together.
    assert sizes == [1, 4]
