"""The ``EventLog`` contract, on every engine: the database's own log (``sqlite``,
``postgres``), Redis Streams (``redis``) and Kafka (``kafka``, with the store on
SQLite for the gateway's bookkeeping)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from contract_support import ManualClock, OpenStore

from strongroom.adapters.store import Store
from strongroom.errors import Backpressure, StorageUnavailable
from strongroom.ports import EventLog, NewRecord
from support_database import fresh_database
from support_streams import kafka_url, redis_stream_settings, unique_prefix

TOPIC = "payments.tokenized"
OTHER_TOPIC = "payments.raw"
DLQ = TOPIC + ".dlq"

__all__ = ["kafka_url"]  # the session's broker, a fixture


@pytest.fixture(params=["sqlite", "postgres", "redis", "kafka"])
async def store_settings(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[dict[str, Any]]:
    sqlite = {"database_url": f"sqlite:///{tmp_path / 'store.db'}"}
    if request.param == "sqlite":
        yield sqlite
    elif request.param == "postgres":
        async with fresh_database() as url:
            yield {"database_url": url}
    elif request.param == "redis":
        async with redis_stream_settings() as stream:
            yield {**sqlite, **stream}
    else:
        broker = request.getfixturevalue("kafka_url")
        yield {**sqlite, "stream_url": broker, "stream_prefix": unique_prefix()}


def records(tenant: str, *ids: str) -> list[NewRecord]:
    return [
        NewRecord(tenant, record_id, f"key-{record_id}", f"body {record_id}".encode())
        for record_id in ids
    ]


async def read_all(log: EventLog, topic: str, tenant: str) -> list[str]:
    return [
        record.record_id
        for record in await log.read(topic, tenant=tenant, after=None, limit=10_000)
    ]


async def group_read(
    log: EventLog, tenant: str = "t1", *, limit: int = 10, consumer: str = "c1"
) -> list[tuple[str, int]]:
    deliveries = await log.group_read(
        TOPIC, "g", tenant=tenant, consumer=consumer, limit=limit,
        visibility_timeout=30, max_deliveries=3,
    )  # fmt: skip
    return [(delivery.record.record_id, delivery.deliveries) for delivery in deliveries]


# -- appends -----------------------------------------------------------------------


async def test_offsets_increase_in_append_order_per_topic(store: Store, clock: ManualClock) -> None:
    first = await store.log.append(TOPIC, records("t1", "a", "b"))
    await store.log.append(OTHER_TOPIC, records("t1", "x"))
    await store.log.append(TOPIC, records("t2", "c"))
    assert first.accepted == ("a", "b")
    stored = await store.log.read(TOPIC, tenant="t1", after=None, limit=10)
    assert [(r.offset, r.record_id, r.key, r.payload) for r in stored] == [
        (0, "a", "key-a", b"body a"),
        (1, "b", "key-b", b"body b"),
    ]
    assert stored[0].appended_at == clock.now()
    assert [r.offset for r in await store.log.read(TOPIC, tenant="t2", after=None, limit=10)] == [2]
    assert [
        r.offset for r in await store.log.read(OTHER_TOPIC, tenant="t1", after=None, limit=10)
    ] == [0]
    assert await store.log.length(TOPIC) == 3
    assert await store.log.length(OTHER_TOPIC) == 1
    assert await store.log.length("payments.unused") == 0


async def test_concurrent_appends_get_distinct_increasing_offsets(store: Store) -> None:
    results = await asyncio.gather(
        *(store.log.append(TOPIC, records("t1", f"{n}-0", f"{n}-1")) for n in range(40))
    )
    assert all(len(result.accepted) == 2 for result in results)
    stored = await store.log.read(TOPIC, tenant="t1", after=None, limit=1000)
    assert [record.offset for record in stored] == list(range(80))
    # Each append's records are adjacent and in the order given.
    by_id = {record.record_id: record.offset for record in stored}
    assert all(by_id[f"{n}-1"] == by_id[f"{n}-0"] + 1 for n in range(40))


@pytest.mark.parametrize("size", [70, 71, 72, 143, 300])
async def test_a_large_append_keeps_every_record_in_order(store: Store, size: int) -> None:
    """Sizes around the rows one insert statement carries on the embedded log (71)."""
    ids = [f"r{n:03d}" for n in range(size)]
    wanted = records("t1", *ids)
    result = await store.log.append(TOPIC, [*wanted, *records("t1", "r000")])
    assert result.accepted == tuple(ids)
    assert result.duplicates == ("r000",)
    stored = await store.log.read(TOPIC, tenant="t1", after=None, limit=1000)
    assert [(r.offset, r.record_id, r.key, r.payload) for r in stored] == [
        (n, record.record_id, record.key, record.payload) for n, record in enumerate(wanted)
    ]
    assert await store.log.length(TOPIC) == size


async def test_a_record_id_is_stored_once_per_tenant_and_topic(store: Store) -> None:
    first = await store.log.append(TOPIC, records("t1", "a", "b", "a"))
    assert (first.accepted, first.duplicates) == (("a", "b"), ("a",))
    again = await store.log.append(TOPIC, records("t1", "b", "c"))
    assert (again.accepted, again.duplicates) == (("c",), ("b",))
    # The same id in another tenant or another topic is another record.
    assert (await store.log.append(TOPIC, records("t2", "a"))).accepted == ("a",)
    assert (await store.log.append(OTHER_TOPIC, records("t1", "a"))).accepted == ("a",)
    assert await read_all(store.log, TOPIC, "t1") == ["a", "b", "c"]


async def test_concurrent_duplicates_are_accepted_exactly_once(store: Store) -> None:
    ids = [f"id-{n}" for n in range(20)]
    # Fifty callers send overlapping windows of the same ids at the same time.
    results = await asyncio.gather(
        *(store.log.append(TOPIC, records("t1", *ids[n % 15 : n % 15 + 6])) for n in range(50))
    )
    accepted = [record_id for result in results for record_id in result.accepted]
    assert sorted(accepted) == sorted(set(accepted))
    stored = await read_all(store.log, TOPIC, "t1")
    assert sorted(stored) == sorted(accepted) == sorted(set(ids))
    offsets = [r.offset for r in await store.log.read(TOPIC, tenant="t1", after=None, limit=100)]
    assert offsets == list(range(len(ids)))


async def test_two_gateways_appending_the_same_ids_store_each_once(
    open_test_store: OpenStore,
) -> None:
    one, two = await open_test_store(), await open_test_store()
    ids = [f"id-{n}" for n in range(30)]
    results = await asyncio.gather(
        *(
            gateway.log.append(TOPIC, records("t1", *ids[n : n + 5]))
            for n in range(0, 26)
            for gateway in (one, two)
        )
    )
    accepted = [record_id for result in results for record_id in result.accepted]
    assert sorted(accepted) == sorted(ids)
    stored = await one.log.read(TOPIC, tenant="t1", after=None, limit=100)
    assert [record.offset for record in stored] == list(range(30))


async def test_append_together_commits_every_topic_or_none(store: Store) -> None:
    tokenized, raw = await store.log.append_together(
        [(TOPIC, records("t1", "a", "b")), (OTHER_TOPIC, records("t1", "a"))]
    )
    assert tokenized.accepted == ("a", "b")
    assert raw.accepted == ("a",)
    broken = NewRecord("t1", "broken", "k", None)  # type: ignore[arg-type]
    with pytest.raises(StorageUnavailable):
        await store.log.append_together(
            [(TOPIC, records("t1", "c")), (OTHER_TOPIC, [*records("t1", "d"), broken])]
        )
    assert await read_all(store.log, TOPIC, "t1") == ["a", "b"]
    assert await read_all(store.log, OTHER_TOPIC, "t1") == ["a"]
    # Nothing of the failed call was marked as seen: a retry is accepted.
    tokenized, raw = await store.log.append_together(
        [(TOPIC, records("t1", "c")), (OTHER_TOPIC, records("t1", "d"))]
    )
    assert (tokenized.accepted, raw.accepted) == (("c",), ("d",))


async def test_a_failing_append_fails_alone(store: Store) -> None:
    broken = NewRecord("t1", "broken", "k", None)  # type: ignore[arg-type]
    outcomes = await asyncio.gather(
        *(store.log.append(TOPIC, records("t1", f"good-{n}")) for n in range(10)),
        store.log.append(TOPIC, [broken]),
        return_exceptions=True,
    )
    assert isinstance(outcomes[-1], StorageUnavailable)
    assert all(not isinstance(outcome, BaseException) for outcome in outcomes[:-1]), outcomes
    assert len(await read_all(store.log, TOPIC, "t1")) == 10


async def test_appends_past_the_queue_bound_get_backpressure(open_test_store: OpenStore) -> None:
    small = await open_test_store(writer_queue_max_events=100)
    outcomes = await asyncio.gather(
        *(
            small.log.append(TOPIC, records("t1", *(f"{n}-{i}" for i in range(60))))
            for n in range(20)
        ),
        return_exceptions=True,
    )
    refused = [outcome for outcome in outcomes if isinstance(outcome, Backpressure)]
    assert refused
    committed = [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]
    assert len(refused) + len(committed) == 20
    assert len(await read_all(small.log, TOPIC, "t1")) == 60 * len(committed)
    await small.log.check_writable()


# -- reads -------------------------------------------------------------------------


async def test_read_pages_after_an_offset(store: Store) -> None:
    await store.log.append(TOPIC, records("t1", *(str(n) for n in range(10))))
    page = await store.log.read(TOPIC, tenant="t1", after=3, limit=4)
    assert [record.offset for record in page] == [4, 5, 6, 7]
    assert await store.log.read(TOPIC, tenant="t1", after=9, limit=4) == []


async def test_tenants_never_see_each_other(store: Store) -> None:
    await store.log.append(TOPIC, records("t1", "a", "b"))
    await store.log.append(TOPIC, records("t2", "c"))
    assert await read_all(store.log, TOPIC, "t2") == ["c"]
    assert await read_all(store.log, TOPIC, "t3") == []
    assert await group_read(store.log, "t2") == [("c", 1)]
    assert await group_read(store.log, "t3") == []


async def test_check_writable_passes_on_a_healthy_store(store: Store) -> None:
    await store.log.check_writable()


# -- consumer groups ---------------------------------------------------------------


async def test_a_group_reads_from_the_start_and_acks(store: Store) -> None:
    await store.log.append(TOPIC, records("t1", "a", "b", "c"))
    assert await group_read(store.log, limit=2) == [("a", 1), ("b", 1)]
    assert await group_read(store.log, limit=2) == [("c", 1)]
    assert await group_read(store.log) == []
    assert await store.log.group_ack(TOPIC, "g", tenant="t1", offsets=[0, 1, 2, 99]) == 3
    assert await store.log.group_ack(TOPIC, "g", tenant="t1", offsets=[0]) == 0
    await store.log.append(TOPIC, records("t1", "d"))
    assert await group_read(store.log) == [("d", 1)]


async def test_unacked_records_come_back_after_the_visibility_timeout(
    store: Store, clock: ManualClock
) -> None:
    await store.log.append(TOPIC, records("t1", "a", "b"))
    assert await group_read(store.log) == [("a", 1), ("b", 1)]
    await store.log.group_ack(TOPIC, "g", tenant="t1", offsets=[1])
    clock.advance(29)
    assert await group_read(store.log) == []
    clock.advance(1)
    await store.log.append(TOPIC, records("t1", "c"))
    # Expired deliveries first, then new records; in offset order.
    assert await group_read(store.log, consumer="c2") == [("a", 2), ("c", 1)]


async def test_too_many_deliveries_move_a_record_to_the_dead_letter_topic(
    store: Store, clock: ManualClock
) -> None:
    await store.log.append(TOPIC, records("t1", "a", "b"))
    for attempt in (1, 2, 3):
        assert await group_read(store.log) == [("a", attempt), ("b", attempt)]
        clock.advance(31)
    await store.log.group_ack(TOPIC, "g", tenant="t1", offsets=[1])
    assert await group_read(store.log) == []
    (letter,) = await store.log.dead_letters(TOPIC, tenant="t1", group="g", limit=10)
    assert (letter.topic, letter.group, letter.offset, letter.deliveries) == (TOPIC, "g", 0, 3)
    assert not letter.replayed
    assert await store.log.dead_letters(TOPIC, tenant="t1", group="other", limit=10) == []
    assert await store.log.dead_letters(TOPIC, tenant="t2", group=None, limit=10) == []
    (stored,) = await store.log.read(DLQ, tenant="t1", after=None, limit=10)
    assert json.loads(stored.payload)["record_id"] == "a"


async def test_replayed_dead_letters_are_delivered_again_once(
    store: Store, clock: ManualClock
) -> None:
    await store.log.append(TOPIC, records("t1", "a"))
    for _ in range(3):
        await group_read(store.log)
        clock.advance(31)
    assert await group_read(store.log) == []
    (letter,) = await store.log.dead_letters(TOPIC, tenant="t1", group=None, limit=10)
    assert (
        await store.log.replay_dead_letters(TOPIC, tenant="t1", group="g", dead_letter_offsets=[99])
        == 0
    )
    assert (
        await store.log.replay_dead_letters(TOPIC, tenant="t1", group="g", dead_letter_offsets=None)
        == 1
    )
    assert (
        await store.log.replay_dead_letters(TOPIC, tenant="t1", group="g", dead_letter_offsets=None)
        == 0
    )
    (letter,) = await store.log.dead_letters(TOPIC, tenant="t1", group=None, limit=10)
    assert letter.replayed
    assert await group_read(store.log) == [("a", 1)]
    await store.log.group_ack(TOPIC, "g", tenant="t1", offsets=[0])
    clock.advance(31)
    assert await group_read(store.log) == []


async def test_two_gateways_never_hand_out_the_same_record_twice(
    open_test_store: OpenStore,
) -> None:
    one, two = await open_test_store(), await open_test_store()
    await one.log.append(TOPIC, records("t1", *(str(n) for n in range(60))))
    reads = await asyncio.gather(
        *(
            group_read(gateway.log, limit=3, consumer=f"c{n}")
            for n in range(15)
            for gateway in (one, two)
        )
    )
    delivered = [record_id for read in reads for record_id, _ in read]
    assert sorted(delivered, key=int) == [str(n) for n in range(60)]


# -- erasure -----------------------------------------------------------------------


async def test_erasing_a_tenant_leaves_the_others_untouched(store: Store) -> None:
    await store.log.append(TOPIC, records("t1", "a"))
    await store.log.append(TOPIC, records("t2", "b", "c"))
    await store.log.append(TOPIC, records("t1", "d"))
    await group_read(store.log, "t1")
    assert await store.log.erase_tenant("t1") == 2
    assert await read_all(store.log, TOPIC, "t1") == []
    assert [
        (r.offset, r.record_id)
        for r in await store.log.read(TOPIC, tenant="t2", after=None, limit=10)
    ] == [
        (1, "b"),
        (2, "c"),
    ]
    assert await store.log.erase_tenant("t1") == 0
    # The group is gone with the tenant's records: nothing is pending or left to read.
    assert await group_read(store.log, "t1") == []
    await store.log.append(TOPIC, records("t1", "a"))
    assert await group_read(store.log, "t1") == [("a", 1)]


async def test_an_erased_tenants_replay_marks_do_not_touch_new_dead_letters(
    store: Store, clock: ManualClock
) -> None:
    for tenant in ("t1", "t2"):
        await store.log.append(TOPIC, records(tenant, "a"))
        for _ in range(3):
            await group_read(store.log, tenant)
            clock.advance(31)
        await group_read(store.log, tenant)
        if tenant == "t1":
            assert (
                await store.log.replay_dead_letters(
                    TOPIC, tenant="t1", group="g", dead_letter_offsets=None
                )
                == 1
            )
            assert await store.log.erase_tenant("t1") == 2
    (letter,) = await store.log.dead_letters(TOPIC, tenant="t2", group="g", limit=10)
    assert not letter.replayed


async def test_a_group_reading_while_gateways_append_misses_nothing(
    open_test_store: OpenStore,
) -> None:
    one, two, reader = await open_test_store(), await open_test_store(), await open_test_store()
    written: list[str] = []

    async def write(gateway: Store, prefix: str) -> None:
        ids = [[f"{prefix}{n}-{i}" for i in range(3)] for n in range(40)]
        written.extend(record_id for batch in ids for record_id in batch)
        await asyncio.gather(*(gateway.log.append(TOPIC, records("t1", *batch)) for batch in ids))

    delivered: list[str] = []
    writers = asyncio.gather(write(one, "one-"), write(two, "two-"))
    while True:
        finished = writers.done()
        batch = await group_read(reader.log, limit=25)
        delivered.extend(record_id for record_id, _ in batch)
        if finished and not batch:
            break
        await asyncio.sleep(0)
    await writers
    # A cursor that stepped over a record committing later would never deliver it.
    assert sorted(delivered) == sorted(written)


async def test_offsets_of_erased_records_are_never_handed_out_again(store: Store) -> None:
    await store.log.append(TOPIC, records("t2", "first"))
    await store.log.append(TOPIC, records("t1", "a", "b"))
    before = await store.log.length(TOPIC)
    assert await store.log.erase_tenant("t1") == 2

    await store.log.append(TOPIC, records("t2", "second"))

    stored = await store.log.read(TOPIC, tenant="t2", after=None, limit=10)
    assert [record.offset for record in stored] == [0, before]
    assert await store.log.length(TOPIC) == before + 1


# -- replay, group states and trimming -----------------------------------------------


def deletes_records(store_settings: dict[str, Any]) -> bool:
    """Kafka cannot delete one tenant's records: its ``trim`` deletes nothing."""
    return not str(store_settings.get("stream_url", "")).startswith("kafka://")


async def test_offset_at_finds_a_tenants_first_record_at_or_after_a_time(
    store: Store, clock: ManualClock
) -> None:
    start = clock.now()
    await store.log.append(TOPIC, records("t1", "a"))
    clock.advance(10)
    await store.log.append(TOPIC, records("t2", "other"))
    clock.advance(10)
    await store.log.append(TOPIC, records("t1", "b", "c"))

    assert await store.log.offset_at(TOPIC, tenant="t1", at=start) == 0
    assert await store.log.offset_at(TOPIC, tenant="t1", at=start + 1) == 2
    assert await store.log.offset_at(TOPIC, tenant="t1", at=start + 20) == 2
    assert await store.log.offset_at(TOPIC, tenant="t1", at=start + 21) is None
    assert await store.log.offset_at(TOPIC, tenant="t2", at=start) == 1
    assert await store.log.offset_at(OTHER_TOPIC, tenant="t1", at=start) is None


async def test_rewinding_a_group_delivers_from_the_offset_again(store: Store) -> None:
    await store.log.append(TOPIC, records("t1", "a", "b", "c"))
    assert await group_read(store.log) == [("a", 1), ("b", 1), ("c", 1)]
    await store.log.group_ack(TOPIC, "g", tenant="t1", offsets=[0, 1])

    await store.log.rewind_group(TOPIC, "g", tenant="t1", offset=1)

    # The pending "c" is dropped and comes again as a new delivery, after "b".
    assert await group_read(store.log) == [("b", 1), ("c", 1)]
    assert await group_read(store.log) == []
    assert await store.log.group_ack(TOPIC, "g", tenant="t1", offsets=[1, 2]) == 2


async def test_rewinding_a_new_group_creates_it_at_the_offset(store: Store) -> None:
    await store.log.append(TOPIC, records("t1", "a", "b"))
    await store.log.append(TOPIC, records("t2", "x"))
    await store.log.append(TOPIC, records("t1", "c"))

    await store.log.rewind_group(TOPIC, "g", tenant="t1", offset=1)

    assert await group_read(store.log) == [("b", 1), ("c", 1)]
    assert await group_read(store.log, tenant="t2") == [("x", 1)]


async def test_group_states_count_lag_pending_and_dead_letters(
    store: Store, clock: ManualClock
) -> None:
    assert await store.log.group_states() == []
    await store.log.append(TOPIC, records("t1", "a", "b", "c", "d"))
    await store.log.append(TOPIC, records("t2", "x"))
    for _ in range(3):
        assert [record_id for record_id, _ in await group_read(store.log, limit=1)] == ["a"]
        clock.advance(31)
    # The fourth read dead-letters "a" and delivers "b".
    assert await group_read(store.log, limit=1) == [("b", 1)]
    await group_read(store.log, tenant="t2")
    await store.log.group_ack(TOPIC, "g", tenant="t2", offsets=[4])

    states = {(s.tenant, s.topic, s.group): s for s in await store.log.group_states()}
    one = states[("t1", TOPIC, "g")]
    assert (one.lag, one.pending, one.dead_letters) == (2, 1, 1)
    two = states[("t2", TOPIC, "g")]
    assert (two.lag, two.pending, two.dead_letters) == (0, 0, 0)

    await store.log.replay_dead_letters(TOPIC, tenant="t1", group="g", dead_letter_offsets=None)
    states = {(s.tenant, s.topic, s.group): s for s in await store.log.group_states()}
    assert states[("t1", TOPIC, "g")].dead_letters == 0


async def test_trimming_keeps_the_newest_and_everything_a_group_has_not_settled(
    store: Store, store_settings: dict[str, Any], clock: ManualClock
) -> None:
    await store.log.append(TOPIC, records("t1", *"abcdefgh"))
    await store.log.append(TOPIC, records("t2", "x", "y", "z"))
    # t1's group: a..c acknowledged, d pending, e..h not delivered yet.
    assert len(await group_read(store.log, limit=4)) == 4
    await store.log.group_ack(TOPIC, "g", tenant="t1", offsets=[0, 1, 2])

    trimmed = await store.log.trim(TOPIC, max_records=2)

    left_t1 = await read_all(store.log, TOPIC, "t1")
    left_t2 = await read_all(store.log, TOPIC, "t2")
    if deletes_records(store_settings):
        # t1 loses only what its group settled; t2 has no group and keeps its newest two.
        assert (left_t1, left_t2, trimmed) == (list("defgh"), ["y", "z"], 4)
    else:
        assert (left_t1, left_t2, trimmed) == (list("abcdefgh"), ["x", "y", "z"], 0)
    # Whatever was trimmed, the group still gets every record it has not settled.
    clock.advance(31)
    assert [record_id for record_id, _ in await group_read(store.log, limit=10)] == list("defgh")


async def test_trimming_stops_at_a_record_waiting_in_dead_letters(
    store: Store, store_settings: dict[str, Any], clock: ManualClock
) -> None:
    await store.log.append(TOPIC, records("t1", "settled", "a", "b", "c"))
    assert await group_read(store.log, limit=1) == [("settled", 1)]
    await store.log.group_ack(TOPIC, "g", tenant="t1", offsets=[0])
    for _ in range(3):
        await group_read(store.log, limit=1)
        clock.advance(31)
    # "a" is dead-lettered; b and c are delivered and acknowledged.
    assert await group_read(store.log) == [("b", 1), ("c", 1)]
    await store.log.group_ack(TOPIC, "g", tenant="t1", offsets=[2, 3])

    trimmed = await store.log.trim(TOPIC, max_records=0)

    left = await read_all(store.log, TOPIC, "t1")
    if deletes_records(store_settings):
        assert (left, trimmed) == (["a", "b", "c"], 1)
    else:
        assert (left, trimmed) == (["settled", "a", "b", "c"], 0)
    await store.log.replay_dead_letters(TOPIC, tenant="t1", group="g", dead_letter_offsets=None)
    assert await group_read(store.log) == [("a", 1)]
