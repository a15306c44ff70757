"""The Redis Streams event log's appends are one Lua script each: the idempotency
check and the append cannot be separated, by another gateway or by a failure.

1. Two gateways (two logs on one Redis) sending overlapping ids at the same time
   store each id once, at dense offsets.
2. ``append_together`` is all or nothing across topics: concurrent calls with
   the same ids are won, on every topic, by the same call.
3. A batch that cannot be written whole is refused whole: with a topic's offset
   counter lost (an evicted key), no topic of the call gets a record.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from strongroom.adapters.redis_streams import open_redis_event_log
from strongroom.errors import StorageUnavailable
from strongroom.ports import EventLog, NewRecord
from support_app import make_settings
from support_streams import REDIS_URL, redis_stream_settings

TOPIC = "payments.tokenized"
OTHER_TOPIC = "payments.raw"
TENANT = "ten_atomicity"

OpenLog = Callable[[], Awaitable[EventLog]]


@pytest.fixture
async def stream() -> AsyncIterator[dict[str, Any]]:
    async with redis_stream_settings() as overrides:
        yield overrides


@pytest.fixture
async def open_log(tmp_path: Path, stream: dict[str, Any]) -> AsyncIterator[OpenLog]:
    """Open another log on the test's prefix, as another gateway would; all closed after."""
    opened: list[EventLog] = []

    async def open_one() -> EventLog:
        log = await open_redis_event_log(make_settings(tmp_path, **stream), None)
        opened.append(log)
        return log

    yield open_one
    for log in opened:
        await log.aclose()


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL, socket_timeout=5)
    yield client
    await client.aclose()


def records(*ids: str) -> list[NewRecord]:
    return [NewRecord(TENANT, record_id, "key", record_id.encode()) for record_id in ids]


async def test_two_gateways_sending_overlapping_ids_store_each_once(open_log: OpenLog) -> None:
    one, two = await open_log(), await open_log()
    ids = [f"evt-{n}" for n in range(200)]
    windows = [ids[start : start + 20] for start in range(0, 181, 5)]

    results = await asyncio.gather(
        *(gateway.append(TOPIC, records(*window)) for window in windows for gateway in (one, two))
    )

    accepted = [record_id for result in results for record_id in result.accepted]
    duplicates = [record_id for result in results for record_id in result.duplicates]
    assert sorted(accepted) == sorted(ids)
    assert len(accepted) + len(duplicates) == 2 * sum(len(window) for window in windows)
    stored = await two.read(TOPIC, tenant=TENANT, after=None, limit=1000)
    assert sorted(record.record_id for record in stored) == sorted(ids)
    assert [record.offset for record in stored] == list(range(len(ids)))
    assert await one.length(TOPIC) == len(ids)


async def test_append_together_is_won_by_one_call_on_every_topic(open_log: OpenLog) -> None:
    one, two = await open_log(), await open_log()
    ids = [f"evt-{n}" for n in range(30)]

    calls = [
        gateway.append_together(
            [
                (TOPIC, records(*ids[start : start + 6])),
                (OTHER_TOPIC, records(*ids[start : start + 6])),
            ]
        )
        for start in range(0, 25, 3)
        for gateway in (one, two)
    ]
    results = await asyncio.gather(*calls)

    for tokenized, raw in results:
        # The call that stored an id on one topic stored it on the other too.
        assert tokenized.accepted == raw.accepted
        assert tokenized.duplicates == raw.duplicates
    for topic in (TOPIC, OTHER_TOPIC):
        stored = await one.read(topic, tenant=TENANT, after=None, limit=100)
        assert sorted(record.record_id for record in stored) == sorted(ids)
        assert [record.offset for record in stored] == list(range(len(ids)))


async def test_a_batch_that_cannot_be_written_whole_is_refused_whole(
    open_log: OpenLog, stream: dict[str, Any], redis: Redis
) -> None:
    log = await open_log()
    await log.append_together([(TOPIC, records("a", "b")), (OTHER_TOPIC, records("a"))])
    # The counter of one topic is lost, as an eviction would lose it: its next
    # offsets would collide with the stream's entries.
    assert await redis.delete(f"{stream['stream_prefix']}topic:{TOPIC}") == 1

    with pytest.raises(StorageUnavailable, match="COUNTERBEHIND"):
        await log.append_together([(OTHER_TOPIC, records("c")), (TOPIC, records("c"))])

    assert [r.record_id for r in await log.read(TOPIC, tenant=TENANT, after=None, limit=10)] == [
        "a",
        "b",
    ]
    assert [
        r.record_id for r in await log.read(OTHER_TOPIC, tenant=TENANT, after=None, limit=10)
    ] == ["a"]
    assert await log.length(OTHER_TOPIC) == 1
    # Nothing of the refused call was marked as seen either.
    assert (await log.append(OTHER_TOPIC, records("c"))).accepted == ("c",)


async def test_a_record_repeated_within_one_call_is_stored_once(open_log: OpenLog) -> None:
    log = await open_log()

    tokenized, raw, again = await log.append_together(
        [(TOPIC, records("a", "b", "a")), (OTHER_TOPIC, records("a")), (TOPIC, records("b", "c"))]
    )
    later = await log.append(TOPIC, records("a", "d"))

    assert (tokenized.accepted, tokenized.duplicates) == (("a", "b"), ("a",))
    assert raw.accepted == ("a",)
    assert (again.accepted, again.duplicates) == (("c",), ("b",))
    assert (later.accepted, later.duplicates) == (("d",), ("a",))
    stored = await log.read(TOPIC, tenant=TENANT, after=None, limit=10)
    assert [(r.offset, r.record_id) for r in stored] == [(0, "a"), (1, "b"), (2, "c"), (3, "d")]
