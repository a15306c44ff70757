"""Copies on the broker that the index does not name: readers drop them, never skip an
append still in flight, and a client's retry ends as exactly one delivered record.

The crash between the broker's acknowledgement and the index commit is made
by running an append's first two steps (claim, produce) and never the third.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from strongroom.adapters.kafka._records import HEADER_AT, HEADER_CLAIM, HEADER_ID, HEADER_TENANT
from strongroom.adapters.kafka.log import ORPHAN_GRACE_SECONDS, KafkaEventLog
from strongroom.adapters.store import Store, open_store
from strongroom.adapters.streams import TopicRoutedLog
from strongroom.errors import StorageUnavailable
from strongroom.ports import Clock, EventLog, NewRecord
from support_app import make_settings
from support_database import fresh_database
from support_streams import kafka_url, unique_prefix

TOPIC = "payments.tokenized"

__all__ = ["kafka_url"]  # the session's broker, a fixture


class ManualClock(Clock):
    def __init__(self) -> None:
        self.time = 1_800_000_000.0

    def now(self) -> float:
        return self.time

    def advance(self, seconds: float) -> None:
        self.time += seconds


OpenGateway = Callable[[], Awaitable[Store]]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """Where the gateways keep the index and group state: SQLite or PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    async with fresh_database() as url:
        yield url


@pytest.fixture
async def open_gateway(
    tmp_path: Path, kafka_url: str, database_url: str, clock: ManualClock
) -> AsyncIterator[OpenGateway]:
    """Gateways sharing one database and one prefix on the broker, on the manual clock."""
    settings = make_settings(
        tmp_path, database_url=database_url, stream_url=kafka_url, stream_prefix=unique_prefix()
    )
    opened: list[Store] = []

    async def open_one() -> Store:
        opened.append(await open_store(settings, clock=clock))
        return opened[-1]

    try:
        yield open_one
    finally:
        for store in reversed(opened):
            await store.aclose()


def kafka_log(store: Store) -> KafkaEventLog:
    assert isinstance(store.log, TopicRoutedLog)
    assert isinstance(store.log.broker, KafkaEventLog)
    return store.log.broker


def record(tenant: str, record_id: str) -> NewRecord:
    return NewRecord(tenant, record_id, "merchant-1", f"body {record_id}".encode())


async def ids(log: EventLog, tenant: str = "t1") -> list[str]:
    return [r.record_id for r in await log.read(TOPIC, tenant=tenant, after=None, limit=100)]


async def group_ids(log: EventLog, group: str = "g", tenant: str = "t1") -> list[str]:
    deliveries = await log.group_read(
        TOPIC, group, tenant=tenant, consumer="c", limit=100,
        visibility_timeout=3600, max_deliveries=5,
    )  # fmt: skip
    return [delivery.record.record_id for delivery in deliveries]


async def crash_after_the_ack(log: KafkaEventLog, new: NewRecord, now: float) -> None:
    """What a gateway killed between the broker's ack and its index commit leaves behind:
    the claim in the index and the record on the broker."""
    identity = (log.broker_topic(TOPIC), new.tenant, new.record_id)
    claim = "crashed0000000000000000000000000"
    assert await log._appender.claim([identity], claim, now) == set()
    await log._appender.produce([(identity, new)], claim, now)


async def test_a_crash_after_the_ack_leaves_a_copy_that_readers_wait_for_then_drop(
    open_gateway: OpenGateway, clock: ManualClock
) -> None:
    one, two = await open_gateway(), await open_gateway()
    await one.log.append(TOPIC, [record("t1", "before")])
    assert await group_ids(two.log) == ["before"]
    await crash_after_the_ack(kafka_log(one), record("t1", "a"), clock.now())
    # Another gateway commits a record behind the undecided one.
    assert (await two.log.append(TOPIC, [record("t1", "later")])).accepted == ("later",)
    await two.log.append(TOPIC, [record("t2", "x")])

    # Within the grace period the copy may still be committed: no reader steps over it.
    assert await ids(two.log) == ["before"]
    assert await ids(one.log) == ["before"]
    assert await group_ids(two.log) == []
    # Other tenants do not wait for it.
    assert await ids(two.log, "t2") == ["x"]
    assert await group_ids(two.log, tenant="t2") == ["x"]

    clock.advance(ORPHAN_GRACE_SECONDS + 1)
    # Past the grace period nothing can commit it any more: it is dropped.
    assert await ids(two.log) == ["before", "later"]
    assert await group_ids(two.log) == ["later"]

    # The client was never acknowledged and retries: the dead claim is taken over,
    # the record produced again, and exactly one copy is ever delivered.
    retried = await two.log.append(TOPIC, [record("t1", "a")])
    assert (retried.accepted, retried.duplicates) == (("a",), ())
    assert (await one.log.append(TOPIC, [record("t1", "a")])).duplicates == ("a",)
    assert await ids(one.log) == ["before", "later", "a"]
    assert await group_ids(two.log) == ["a"]
    assert await group_ids(one.log, group="fresh") == ["before", "later", "a"]
    # The broker holds both copies; the log counts them, readers do not.
    assert await one.log.length(TOPIC) == 5


async def test_a_copy_no_claim_names_is_dropped_at_once_and_the_retry_counts(
    open_gateway: OpenGateway, clock: ManualClock, kafka_url: str
) -> None:
    gateway = await open_gateway()
    log = kafka_log(gateway)
    await log.append(TOPIC, [record("t1", "before")])
    # A record of the gateway's format produced straight to the topic, with no
    # index row at all (as an append whose claim was released leaves it).
    producer = Producer({"bootstrap.servers": kafka_url.removeprefix("kafka://")})
    producer.produce(
        log.broker_topic(TOPIC),
        value=b"body a",
        key=b"merchant-1",
        headers=[
            (HEADER_TENANT, b"t1"), (HEADER_ID, b"a"), (HEADER_CLAIM, b"released"),
            (HEADER_AT, repr(clock.now()).encode()),
        ],
    )  # fmt: skip
    assert producer.flush(10) == 0

    # Nothing can ever commit a copy whose claim is gone: it is dropped at once.
    assert await ids(log) == ["before"]
    assert await group_ids(log) == ["before"]
    retried = await log.append(TOPIC, [record("t1", "a")])
    assert retried.accepted == ("a",)
    stored = await log.read(TOPIC, tenant="t1", after=None, limit=10)
    assert [(r.offset, r.record_id) for r in stored] == [(0, "before"), (2, "a")]
    assert await group_ids(log) == ["a"]


async def test_a_reader_waits_for_an_append_between_the_ack_and_its_commit(
    open_gateway: OpenGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    one, two = await open_gateway(), await open_gateway()
    await one.log.append(TOPIC, [record("t1", "before")])
    assert await group_ids(two.log) == ["before"]
    acknowledged, commit = asyncio.Event(), asyncio.Event()
    index = kafka_log(one)._index
    settle = index.settle

    async def held_settle(*args: Any, **kwargs: Any) -> None:
        acknowledged.set()
        await commit.wait()
        await settle(*args, **kwargs)

    monkeypatch.setattr(index, "settle", held_settle)
    slow = asyncio.create_task(one.log.append(TOPIC, [record("t1", "slow")]))
    await asyncio.wait_for(acknowledged.wait(), 20)
    await two.log.append(TOPIC, [record("t1", "fast")])

    # "slow" is on the broker, acknowledged, not committed: readers stop before it.
    assert await ids(two.log) == ["before"]
    assert await group_ids(two.log) == []

    commit.set()
    assert (await asyncio.wait_for(slow, 20)).accepted == ("slow",)
    assert await ids(two.log) == ["before", "slow", "fast"]
    assert await group_ids(two.log) == ["slow", "fast"]


async def test_an_append_that_commits_too_late_fails_and_its_retry_counts_once(
    open_gateway: OpenGateway, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = await open_gateway()
    log = kafka_log(gateway)
    broker = log._broker
    produce = broker.produce

    async def slow_produce(*args: Any, **kwargs: Any) -> list[int]:
        offsets = await produce(*args, **kwargs)
        # The acknowledgement came back after half the grace period: readers may
        # already have given the record up, so the append must not commit it.
        clock.advance(ORPHAN_GRACE_SECONDS / 2 + 1)
        return offsets

    monkeypatch.setattr(broker, "produce", slow_produce)
    with pytest.raises(StorageUnavailable):
        await log.append(TOPIC, [record("t1", "a")])
    monkeypatch.setattr(broker, "produce", produce)

    # Its claim was released: the copy on the broker is dropped, the retry counts.
    assert await ids(log) == []
    assert (await log.append(TOPIC, [record("t1", "a")])).accepted == ("a",)
    stored = await log.read(TOPIC, tenant="t1", after=None, limit=10)
    assert [(r.offset, r.record_id) for r in stored] == [(1, "a")]
    assert await group_ids(log) == ["a"]
