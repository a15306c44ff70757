"""Trimming a Redis stream never removes what a consumer group has not settled.

Records are removed from a tenant's oldest on, up to the first one some group
of that tenant has not delivered yet, holds pending, or has waiting in dead
letters; never by ``MAXLEN`` on append. Trimmed records take their
idempotency marks with them, so the marks do not outgrow the stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from strongroom.adapters.redis_streams import _log, open_redis_event_log
from strongroom.ports import Clock, EventLog, NewRecord
from support_app import make_settings
from support_streams import REDIS_URL, redis_stream_settings

TOPIC = "payments.tokenized"
DLQ = TOPIC + ".dlq"
TENANT = "ten_trim"
OTHER_TENANT = "ten_other"


class ManualClock(Clock):
    def __init__(self) -> None:
        self.time = 1_800_000_000.0

    def now(self) -> float:
        return self.time

    def advance(self, seconds: float) -> None:
        self.time += seconds


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def stream() -> AsyncIterator[dict[str, Any]]:
    async with redis_stream_settings() as overrides:
        yield overrides


@pytest.fixture
async def log(
    tmp_path: Path, stream: dict[str, Any], clock: ManualClock
) -> AsyncIterator[EventLog]:
    opened = await open_redis_event_log(make_settings(tmp_path, **stream), clock)
    yield opened
    await opened.aclose()


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL, socket_timeout=5)
    yield client
    await client.aclose()


def records(tenant: str, *ids: str) -> list[NewRecord]:
    return [NewRecord(tenant, record_id, "key", record_id.encode()) for record_id in ids]


async def stored(log: EventLog, tenant: str = TENANT, topic: str = TOPIC) -> list[str]:
    return [r.record_id for r in await log.read(topic, tenant=tenant, after=None, limit=1000)]


async def read(log: EventLog, group: str, limit: int = 100) -> list[str]:
    deliveries = await log.group_read(
        TOPIC, group, tenant=TENANT, consumer="c", limit=limit,
        visibility_timeout=30, max_deliveries=3,
    )  # fmt: skip
    return [delivery.record.record_id for delivery in deliveries]


@pytest.mark.parametrize("chunk", [2, _log.TRIM_CHUNK])
async def test_the_slowest_group_bounds_what_is_trimmed(
    log: EventLog, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    # A small chunk makes one trim take several scripts, as a long stream would.
    monkeypatch.setattr(_log, "TRIM_CHUNK", chunk)
    ids = [f"r{n}" for n in range(10)]
    await log.append(TOPIC, records(TENANT, *ids))
    assert await read(log, "fast") == ids
    await log.group_ack(TOPIC, "fast", tenant=TENANT, offsets=range(10))
    # "slow" settles r0..r2, holds r3..r5 pending, and has not been given r6..r9.
    assert await read(log, "slow", limit=6) == ids[:6]
    await log.group_ack(TOPIC, "slow", tenant=TENANT, offsets=[0, 1, 2, 4])

    assert await log.trim(TOPIC, max_records=0) == 3
    assert await stored(log) == ids[3:]

    await log.group_ack(TOPIC, "slow", tenant=TENANT, offsets=[3, 5])
    assert await log.trim(TOPIC, max_records=0) == 3
    assert await stored(log) == ids[6:]
    assert await read(log, "slow") == ids[6:]
    assert await log.trim(TOPIC, max_records=0) == 0
    await log.group_ack(TOPIC, "slow", tenant=TENANT, offsets=range(6, 10))
    assert await log.trim(TOPIC, max_records=1) == 3
    assert await stored(log) == ["r9"]


async def test_a_group_that_has_read_nothing_keeps_everything(log: EventLog) -> None:
    await log.append(TOPIC, records(TENANT, "a", "b", "c"))
    await log.append(TOPIC, records(OTHER_TENANT, "x", "y", "z"))
    assert await read(log, "new", limit=0) == []

    # Only the other tenant, whose records no group consumes, is trimmed.
    assert await log.trim(TOPIC, max_records=1) == 2
    assert await stored(log) == ["a", "b", "c"]
    assert await stored(log, OTHER_TENANT) == ["z"]


async def test_a_dead_letter_holds_its_record_until_the_letter_is_trimmed(
    log: EventLog, clock: ManualClock
) -> None:
    await log.append(TOPIC, records(TENANT, "a", "b"))
    for _ in range(3):
        assert await read(log, "g", limit=1) == ["a"]
        clock.advance(31)
    assert await read(log, "g") == ["b"]
    await log.group_ack(TOPIC, "g", tenant=TENANT, offsets=[1])
    assert len(await log.dead_letters(TOPIC, tenant=TENANT, group="g", limit=10)) == 1

    assert await log.trim(TOPIC, max_records=0) == 0
    # Trimming the dead-letter topic (no group reads it) gives the record up.
    assert await log.trim(DLQ, max_records=0) == 1
    assert await log.dead_letters(TOPIC, tenant=TENANT, group=None, limit=10) == []
    assert await log.trim(TOPIC, max_records=0) == 2
    assert await stored(log) == []


async def test_trimmed_records_take_their_idempotency_marks_with_them(
    log: EventLog, stream: dict[str, Any], redis: Redis
) -> None:
    await log.append(TOPIC, records(TENANT, "a", "b", "c", "d"))

    assert await log.trim(TOPIC, max_records=2) == 2

    marks = await redis.hgetall(f"{stream['stream_prefix']}ids:{TOPIC}:{TENANT}")
    assert marks == {b"c": b"2", b"d": b"3"}
    again = await log.append(TOPIC, records(TENANT, "c", "d"))
    assert again.duplicates == ("c", "d")


async def test_appends_never_drop_unconsumed_records(log: EventLog) -> None:
    await read(log, "g", limit=0)
    for batch in range(20):
        await log.append(TOPIC, records(TENANT, *(f"{batch}-{n}" for n in range(50))))

    assert len(await stored(log)) == 1000
    assert len(await read(log, "g", limit=1000)) == 1000
