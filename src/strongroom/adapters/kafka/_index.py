"""The idempotency index of the Kafka event log: which copy of each record counts.

One row per (topic, tenant, record id) in ``kafka_records``. An append first
*claims* its ids (rows with ``offset`` NULL and the append's claim token),
then produces, then *settles* the claims with the offsets the broker
acknowledged. What a reader makes of a record found on the broker follows
from the row (``KafkaEventLog`` applies it):

====================================  ==========================================
row for the record's id               the record at offset ``o`` is
====================================  ==========================================
``offset == o``                       delivered (the one copy that counts)
NULL offset, the record's claim,      undecided: readers stop before it
younger than the grace period
anything else (another offset,        dropped: nothing can ever make it count
another claim, an old claim, none)
====================================  ==========================================

Claims are committed before anything is produced, so two gateways given the
same id never both produce it (one waits for the other's outcome), and a
claim is settled only by the append that holds it, within half the grace
period of its start.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from sqlalchemy import and_, delete, func, insert, literal, select, union_all, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from strongroom.adapters.sql.engine import translate_errors
from strongroom.adapters.sql.kafka_tables import kafka_records
from strongroom.errors import StorageUnavailable
from strongroom.ports import Clock

#: Ids per ``IN (...)`` list: below SQLite's variable limit with room to spare.
CHUNK: Final = 400

#: (broker topic, tenant, record id).
Identity = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class Row:
    """What the index holds for one id."""

    offset: int | None
    claim: str
    appended_at: float


@dataclass(frozen=True, slots=True)
class Listing:
    """A tenant's indexed records after an offset, and where its live claims may land."""

    #: (offset, record id, claim) of committed records, in offset order.
    committed: list[tuple[int, str, str]]
    #: For each claim younger than the grace period: the offset its record lands after.
    claims_land_after: list[int]


class _Contended(Exception):
    """Another append holds a claim on one of the ids, or won a race for it."""


def _chunks(items: Sequence[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), CHUNK):
        yield list(items[start : start + CHUNK])


def _by_topic_and_tenant(identities: Iterable[Identity]) -> dict[tuple[str, str], list[str]]:
    grouped: dict[tuple[str, str], list[str]] = {}
    for topic, tenant, record_id in identities:
        grouped.setdefault((topic, tenant), []).append(record_id)
    return grouped


def _retryable(exc: DBAPIError) -> bool:
    # A unique violation (another gateway claimed first) or, on PostgreSQL, a
    # deadlock or serialization failure: the claim is simply tried again.
    if isinstance(exc, IntegrityError):
        return True
    code = getattr(exc.orig, "sqlstate", None)
    return isinstance(code, str) and code.startswith("40")


async def rows_of(
    connection: AsyncConnection, identities: Iterable[Identity]
) -> dict[Identity, Row]:
    """The index rows of these ids (those that have one)."""
    found: dict[Identity, Row] = {}
    for (topic, tenant), record_ids in _by_topic_and_tenant(identities).items():
        for chunk in _chunks(record_ids):
            result = await connection.execute(
                select(
                    kafka_records.c.record_id,
                    kafka_records.c.offset,
                    kafka_records.c.claim,
                    kafka_records.c.appended_at,
                ).where(
                    kafka_records.c.topic == topic,
                    kafka_records.c.tenant == tenant,
                    kafka_records.c.record_id.in_(chunk),
                )
            )
            for record_id, offset, claim, appended_at in result:
                found[(topic, tenant, record_id)] = Row(
                    None if offset is None else int(offset), claim, float(appended_at)
                )
    return found


async def settle_in(
    connection: AsyncConnection,
    claim: str,
    placed: Sequence[tuple[Identity, int]],
    appended_at: float,
) -> None:
    """Turn the claims on ``placed`` ids into committed rows at their offsets, in the
    caller's transaction.

    Raises:
        StorageUnavailable: a claim is no longer held (taken over, or its tenant
            erased); the caller's transaction must roll back.
    """
    released = 0
    for (topic, tenant), record_ids in _by_topic_and_tenant(i for i, _ in placed).items():
        for chunk in _chunks(record_ids):
            result = await connection.execute(
                delete(kafka_records).where(
                    kafka_records.c.topic == topic,
                    kafka_records.c.tenant == tenant,
                    kafka_records.c.record_id.in_(chunk),
                    kafka_records.c.claim == claim,
                    kafka_records.c.offset.is_(None),
                )
            )
            released += result.rowcount
    if released != len(placed):
        raise StorageUnavailable("The write lost its claim on a record id; retry it.")
    if placed:
        await connection.execute(
            insert(kafka_records),
            [
                {
                    "topic": topic, "tenant": tenant, "record_id": record_id, "offset": offset,
                    "claim": claim, "appended_at": appended_at, "lands_after": None,
                }
                for (topic, tenant, record_id), offset in placed
            ],
        )  # fmt: skip


class Index:
    """``kafka_records`` through the gateway's engine (see the module table)."""

    def __init__(self, engine: AsyncEngine, clock: Clock, *, grace: float) -> None:
        self._engine = engine
        self._clock = clock
        self._grace = grace

    # -- claims ---------------------------------------------------------------

    async def claim(
        self,
        identities: Sequence[Identity],
        *,
        claim: str,
        appended_at: float,
        lands_after: dict[str, int],
        wait: float,
    ) -> set[Identity]:
        """Claim every id not committed yet; return the committed ones (duplicates).

        An id another append holds a live claim on is waited for (up to ``wait``
        seconds): it ends committed (a duplicate) or released (claimed here).
        A claim older than the grace period is dead and taken over.

        Raises:
            StorageUnavailable: the index failed, or an id stayed claimed elsewhere.
        """
        deadline = time.monotonic() + wait
        pause = 0.005
        while True:
            try:
                async with translate_errors():
                    try:
                        async with self._engine.begin() as connection:
                            return await self._claim_in(
                                connection, identities, claim, appended_at, lands_after
                            )
                    except DBAPIError as exc:
                        if not _retryable(exc):
                            raise
                        raise _Contended from exc
            except _Contended:
                if time.monotonic() >= deadline:
                    raise StorageUnavailable(
                        "Another gateway is writing the same record ids; retry shortly."
                    ) from None
            # Jitter keeps two gateways that contend for the same ids from
            # retrying in lockstep.
            await asyncio.sleep(pause * (1 + random.random()))  # noqa: S311 - not security relevant
            pause = min(pause * 2, 0.1)

    async def _claim_in(
        self,
        connection: AsyncConnection,
        identities: Sequence[Identity],
        claim: str,
        appended_at: float,
        lands_after: dict[str, int],
    ) -> set[Identity]:
        existing = await rows_of(connection, identities)
        alive_since = self._clock.now() - self._grace
        committed = {i for i, row in existing.items() if row.offset is not None}
        if any(row.offset is None and row.appended_at > alive_since for row in existing.values()):
            raise _Contended
        # Sorted, so two gateways inserting overlapping ids on PostgreSQL take
        # their index locks in the same order and never deadlock.
        fresh = sorted(i for i in identities if i not in existing)
        if fresh:
            await connection.execute(
                insert(kafka_records),
                [
                    {
                        "topic": topic, "tenant": tenant, "record_id": record_id, "offset": None,
                        "claim": claim, "appended_at": appended_at,
                        "lands_after": lands_after[topic],
                    }
                    for topic, tenant, record_id in fresh
                ],
            )  # fmt: skip
        for (topic, tenant, record_id), row in sorted(existing.items()):
            if row.offset is not None:
                continue
            # A dead claim (its append crashed or gave up without releasing it).
            taken = await connection.execute(
                update(kafka_records)
                .where(
                    kafka_records.c.topic == topic,
                    kafka_records.c.tenant == tenant,
                    kafka_records.c.record_id == record_id,
                    kafka_records.c.claim == row.claim,
                    kafka_records.c.offset.is_(None),
                )
                .values(claim=claim, appended_at=appended_at, lands_after=lands_after[topic])
            )
            if taken.rowcount != 1:
                raise _Contended
        return committed

    async def settle(
        self,
        claim: str,
        placed: Sequence[tuple[Identity, int]],
        *,
        appended_at: float,
        in_time: Callable[[], bool],
    ) -> None:
        """Commit the claimed ids at their offsets, all in one transaction, if ``in_time()``
        still holds just before the commit.

        Raises:
            StorageUnavailable: the index failed, a claim was lost, or the append
                ran too long (readers may already have given its records up).
        """
        async with translate_errors(), self._engine.begin() as connection:
            if not in_time():
                raise StorageUnavailable("The write took too long to commit; retry it.")
            await settle_in(connection, claim, placed, appended_at)
            if not in_time():
                raise StorageUnavailable("The write took too long to commit; retry it.")

    async def release(self, claim: str, identities: Iterable[Identity]) -> None:
        """Drop the claims of a failed append, so a retry need not wait for them to age.

        Best effort: a claim left behind is dead once older than the grace period.
        """
        try:
            async with translate_errors(), self._engine.begin() as connection:
                await release_in(connection, claim, identities)
        except StorageUnavailable:
            pass

    # -- reads ----------------------------------------------------------------

    async def listing(self, topic: str, tenant: str, after: int, limit: int) -> Listing:
        """The tenant's committed rows after ``after`` (up to ``limit``) and its live
        claims, read in one statement so both come from one snapshot."""
        alive_since = self._clock.now() - self._grace
        mine = and_(kafka_records.c.topic == topic, kafka_records.c.tenant == tenant)
        committed = (
            select(
                literal(0).label("live"), kafka_records.c.offset, kafka_records.c.record_id,
                kafka_records.c.claim,
            )
            .where(mine, kafka_records.c.offset > after)
            .order_by(kafka_records.c.offset)
            .limit(limit)
            .subquery()
        )  # fmt: skip
        claims = select(
            literal(1).label("live"),
            func.coalesce(kafka_records.c.lands_after, -1),
            kafka_records.c.record_id,
            kafka_records.c.claim,
        ).where(mine, kafka_records.c.offset.is_(None), kafka_records.c.appended_at > alive_since)
        statement = union_all(select(committed), claims)
        async with translate_errors(), self._engine.connect() as connection:
            rows = (await connection.execute(statement)).all()
        listed = Listing([], [])
        for live, offset, record_id, claim in rows:
            if live:
                listed.claims_land_after.append(int(offset))
            else:
                listed.committed.append((int(offset), record_id, claim))
        listed.committed.sort()
        return listed

    async def rows(self, identities: Iterable[Identity]) -> dict[Identity, Row]:
        async with translate_errors(), self._engine.connect() as connection:
            return await rows_of(connection, identities)

    async def offset_at(self, topic: str, tenant: str, at: float) -> int | None:
        statement = select(func.min(kafka_records.c.offset)).where(
            kafka_records.c.topic == topic,
            kafka_records.c.tenant == tenant,
            kafka_records.c.offset.is_not(None),
            kafka_records.c.appended_at >= at,
        )
        async with translate_errors(), self._engine.connect() as connection:
            found = (await connection.execute(statement)).scalar()
        return None if found is None else int(found)


async def release_in(
    connection: AsyncConnection, claim: str, identities: Iterable[Identity]
) -> None:
    """Delete the still-open claims ``claim`` holds on these ids."""
    for (topic, tenant), record_ids in _by_topic_and_tenant(identities).items():
        for chunk in _chunks(record_ids):
            await connection.execute(
                delete(kafka_records).where(
                    kafka_records.c.topic == topic,
                    kafka_records.c.tenant == tenant,
                    kafka_records.c.record_id.in_(chunk),
                    kafka_records.c.claim == claim,
                    kafka_records.c.offset.is_(None),
                )
            )


async def erase_tenant_in(connection: AsyncConnection, tenant: str) -> int:
    """Delete every row of ``tenant``; returns how many named committed records."""
    counted = (
        await connection.execute(
            select(func.count()).where(
                kafka_records.c.tenant == tenant, kafka_records.c.offset.is_not(None)
            )
        )
    ).scalar_one()
    await connection.execute(delete(kafka_records).where(kafka_records.c.tenant == tenant))
    return int(counted)
