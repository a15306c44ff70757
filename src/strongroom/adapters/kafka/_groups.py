"""Consumer-group state of the Kafka event log, in the gateway's database.

A group's position (``kafka_groups.next_offset``: the next broker offset it
has not considered), its unacknowledged deliveries (``kafka_pending``, with
their visibility deadline and delivery count) and its dead letters
(``kafka_dead_letters``, with their replay marks) are rows; the records stay
on the broker. Every function works in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from sqlalchemy import ColumnElement, and_, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from strongroom.adapters.sql.kafka_tables import (
    kafka_dead_letters,
    kafka_groups,
    kafka_pending,
    kafka_records,
)

#: Offsets per ``IN (...)`` list.
_CHUNK: Final = 400


@dataclass(frozen=True, slots=True)
class GroupKey:
    tenant: str
    #: The broker topic.
    topic: str
    group: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Where a group read starts: the position and the expired deliveries."""

    cursor: int
    #: (offset, deliveries) whose visibility timeout expired, in offset order.
    expired: list[tuple[int, int]]


@dataclass(frozen=True, slots=True)
class GroupRow:
    topic: str
    tenant: str
    group: str
    lag: int
    pending: int
    dead_letters: int


@dataclass(frozen=True, slots=True)
class LetterRow:
    dead_letter_offset: int
    group: str
    offset: int
    replayed_at: float | None


def _chunks(offsets: Sequence[int]) -> list[list[int]]:
    return [list(offsets[start : start + _CHUNK]) for start in range(0, len(offsets), _CHUNK)]


def _is_group(key: GroupKey) -> ColumnElement[bool]:
    return and_(
        kafka_groups.c.tenant == key.tenant,
        kafka_groups.c.topic == key.topic,
        kafka_groups.c.group_name == key.group,
    )


def _is_pending(key: GroupKey) -> ColumnElement[bool]:
    return and_(
        kafka_pending.c.tenant == key.tenant,
        kafka_pending.c.topic == key.topic,
        kafka_pending.c.group_name == key.group,
    )


async def position(connection: AsyncConnection, key: GroupKey, *, lock: bool) -> int | None:
    """The group's position, None for a new group; ``lock`` holds its row (PostgreSQL)
    until the transaction ends, so group reads of several gateways take turns."""
    query = select(kafka_groups.c.next_offset).where(_is_group(key))
    if lock:
        query = query.with_for_update()
    found = (await connection.execute(query)).scalar()
    return None if found is None else int(found)


async def ensure(connection: AsyncConnection, key: GroupKey, now: float) -> int:
    """The group's position, creating the group at the earliest offset when new.

    Raises:
        IntegrityError: another gateway created it concurrently (retry).
    """
    found = await position(connection, key, lock=False)
    if found is not None:
        return found
    await connection.execute(
        insert(kafka_groups).values(
            tenant=key.tenant, topic=key.topic, group_name=key.group, next_offset=0,
            created_at=now,
        )
    )  # fmt: skip
    return 0


async def expired(
    connection: AsyncConnection, key: GroupKey, now: float, limit: int
) -> list[tuple[int, int]]:
    rows = await connection.execute(
        select(kafka_pending.c.offset, kafka_pending.c.deliveries)
        .where(_is_pending(key), kafka_pending.c.visible_at <= now)
        .order_by(kafka_pending.c.offset)
        .limit(limit)
    )
    return [(int(offset), int(deliveries)) for offset, deliveries in rows]


async def snapshot(connection: AsyncConnection, key: GroupKey, now: float, limit: int) -> Snapshot:
    cursor = await ensure(connection, key, now)
    return Snapshot(cursor, await expired(connection, key, now, limit))


async def redeliver(
    connection: AsyncConnection,
    key: GroupKey,
    offsets: Sequence[int],
    *,
    consumer: str,
    visible_at: float,
) -> None:
    for chunk in _chunks(offsets):
        await connection.execute(
            update(kafka_pending)
            .where(_is_pending(key), kafka_pending.c.offset.in_(chunk))
            .values(
                deliveries=kafka_pending.c.deliveries + 1,
                visible_at=visible_at,
                consumer=consumer,
            )
        )


async def settle(connection: AsyncConnection, key: GroupKey, offsets: Sequence[int]) -> int:
    """Delete pending deliveries; returns how many there were."""
    settled = 0
    for chunk in _chunks(offsets):
        result = await connection.execute(
            delete(kafka_pending).where(_is_pending(key), kafka_pending.c.offset.in_(chunk))
        )
        settled += result.rowcount
    return settled


async def deliver(
    connection: AsyncConnection,
    key: GroupKey,
    offsets: Sequence[int],
    *,
    consumer: str,
    visible_at: float,
    deliveries: int = 1,
) -> None:
    if offsets:
        await connection.execute(
            insert(kafka_pending),
            [
                {
                    "tenant": key.tenant, "topic": key.topic, "group_name": key.group,
                    "offset": offset, "consumer": consumer, "deliveries": deliveries,
                    "visible_at": visible_at,
                }
                for offset in offsets
            ],
        )  # fmt: skip


async def move(connection: AsyncConnection, key: GroupKey, cursor: int) -> None:
    await connection.execute(update(kafka_groups).where(_is_group(key)).values(next_offset=cursor))


async def rewind(connection: AsyncConnection, key: GroupKey, cursor: int, now: float) -> None:
    """Set the position (creating the group) and drop every pending delivery."""
    await ensure(connection, key, now)
    await move(connection, key, cursor)
    await connection.execute(delete(kafka_pending).where(_is_pending(key)))


async def add_dead_letters(
    connection: AsyncConnection, key: GroupKey, letters: Sequence[tuple[int, int]]
) -> None:
    """Record dead letters as (dead-letter offset, original offset)."""
    if letters:
        await connection.execute(
            insert(kafka_dead_letters),
            [
                {
                    "topic": key.topic, "dead_letter_offset": letter_offset,
                    "tenant": key.tenant, "group_name": key.group, "offset": offset,
                    "replayed_at": None,
                }
                for letter_offset, offset in letters
            ],
        )  # fmt: skip


async def dead_letters(
    connection: AsyncConnection, topic: str, tenant: str, group: str | None, limit: int | None
) -> list[LetterRow]:
    query = (
        select(
            kafka_dead_letters.c.dead_letter_offset,
            kafka_dead_letters.c.group_name,
            kafka_dead_letters.c.offset,
            kafka_dead_letters.c.replayed_at,
        )
        .where(kafka_dead_letters.c.topic == topic, kafka_dead_letters.c.tenant == tenant)
        .order_by(kafka_dead_letters.c.dead_letter_offset)
    )
    if group is not None:
        query = query.where(kafka_dead_letters.c.group_name == group)
    if limit is not None:
        query = query.limit(limit)
    return [
        LetterRow(int(letter), name, int(offset), replayed_at)
        for letter, name, offset, replayed_at in await connection.execute(query)
    ]


async def mark_replayed(
    connection: AsyncConnection, key: GroupKey, letter_offsets: Sequence[int], now: float
) -> None:
    for chunk in _chunks(letter_offsets):
        await connection.execute(
            update(kafka_dead_letters)
            .where(
                kafka_dead_letters.c.topic == key.topic,
                kafka_dead_letters.c.tenant == key.tenant,
                kafka_dead_letters.c.group_name == key.group,
                kafka_dead_letters.c.dead_letter_offset.in_(chunk),
                kafka_dead_letters.c.replayed_at.is_(None),
            )
            .values(replayed_at=now)
        )


async def states(connection: AsyncConnection) -> list[GroupRow]:
    """Every group with its lag (committed records of its tenant from its position on),
    its pending deliveries and its dead letters not replayed."""
    g = kafka_groups.c
    lag = (
        select(func.count())
        .select_from(kafka_records)
        .where(
            kafka_records.c.topic == g.topic,
            kafka_records.c.tenant == g.tenant,
            kafka_records.c.offset >= g.next_offset,
        )
        .scalar_subquery()
    )
    pending = (
        select(func.count())
        .select_from(kafka_pending)
        .where(
            kafka_pending.c.topic == g.topic,
            kafka_pending.c.tenant == g.tenant,
            kafka_pending.c.group_name == g.group_name,
        )
        .scalar_subquery()
    )
    letters = (
        select(func.count())
        .select_from(kafka_dead_letters)
        .where(
            kafka_dead_letters.c.topic == g.topic,
            kafka_dead_letters.c.tenant == g.tenant,
            kafka_dead_letters.c.group_name == g.group_name,
            kafka_dead_letters.c.replayed_at.is_(None),
        )
        .scalar_subquery()
    )
    rows = await connection.execute(
        select(g.topic, g.tenant, g.group_name, lag, pending, letters).order_by(
            g.topic, g.tenant, g.group_name
        )
    )
    return [
        GroupRow(topic, tenant, name, int(lagging), int(waiting), int(dead))
        for topic, tenant, name, lagging, waiting, dead in rows
    ]


async def erase_tenant_in(connection: AsyncConnection, tenant: str) -> None:
    for table in (kafka_pending, kafka_groups, kafka_dead_letters):
        await connection.execute(delete(table).where(table.c.tenant == tenant))
