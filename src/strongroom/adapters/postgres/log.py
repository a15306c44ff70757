"""The event log on PostgreSQL: topics as ordered rows, consumer groups, dead letters.

Same tables and the same behaviour as the SQLite event log, for several gateway
processes sharing one database.

Rules:
1. Offsets are allocated under a per-topic row lock: ``stream_offsets`` holds
   each topic's next offset, and an append locks the rows of its topics
   (``SELECT ... FOR UPDATE``, in topic order so two appends never deadlock)
   until its transaction ends. Appends to a topic therefore commit one after
   the other, in offset order: a reader that sees offset n also sees every
   committed offset below it, so a consumer group's cursor never steps over a
   record that commits later. A counter row rather than ``max(offset) + 1``
   also keeps an erased tenant's offsets from being handed out again (they
   are named by dead-letter replay marks), and rather than a sequence, whose
   values are visible before their transactions commit, keeps offsets dense.
2. Idempotency lives in the same transaction as the append, in the unique
   constraint: the insert goes through ``ON CONFLICT ON CONSTRAINT
   stream_records_idempotency DO NOTHING``, which finds stored ids through that
   index whatever the planner believes. (A lookup query before the insert was
   tried: on a table without statistics yet the planner probes the (topic,
   tenant, offset) index instead and reads a tenant's whole topic per id.)
   When some ids were stored already, the insert is rolled back to a savepoint
   and redone without them, so offsets stay dense. A failure rolls back
   everything: never a dedup mark without its record.
3. Concurrent ``append`` calls of one process share a transaction (group
   commit, ``group_commit.GroupCommit``); when such a shared transaction fails on
   one caller's data or on a deadlock (``sql.engine.retry_alone``), every caller
   is retried in a transaction of its own, so only the culprit fails.
4. A consumer group's reads are serialized by a lock on its ``consumer_groups``
   row, so two gateways never hand the same new record or the same expired
   delivery to two members at once.
5. Topics get their counter row in a short transaction of their own before
   the first append a process makes to them, so appends lock existing rows only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from sqlalchemy import Row, TextClause, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from strongroom.adapters import stream_upkeep as upkeep
from strongroom.adapters.dead_letters import dead_letter_record, dead_letters_from
from strongroom.adapters.group_commit import GroupCommit
from strongroom.adapters.sql.engine import retry_alone, translate_errors
from strongroom.domain.topics import dead_letter_topic
from strongroom.errors import StorageUnavailable
from strongroom.ports import (
    AppendResult,
    Clock,
    DeadLetter,
    Delivery,
    EventLog,
    GroupState,
    NewRecord,
    StoredRecord,
    SystemClock,
)

T = TypeVar("T")
#: One caller's appends: (topic, records, time), committed together.
Request = tuple[str, Sequence[NewRecord], float]

#: Records per shared transaction; a single larger append still goes alone.
MAX_BATCH_WEIGHT: Final = 4096

_COLUMNS: Final = 'topic, "offset", tenant, record_id, key, appended_at, payload'
#: The insert's array parameters, in ``_COLUMNS`` order.
_INSERT_COLUMNS: Final = ("topics", "offsets", "tenants", "ids", "keys", "times", "payloads")
_SQL: Final[dict[str, TextClause]] = {
    name: text(statement)
    for name, statement in {
        "lock_offsets": (
            "SELECT topic, next_offset FROM stream_offsets "
            "WHERE topic = ANY(CAST(:topics AS varchar[])) ORDER BY topic FOR UPDATE"
        ),
        "seed_offsets": (
            "INSERT INTO stream_offsets (topic, next_offset) "
            'SELECT t, coalesce((SELECT max("offset") + 1 FROM stream_records WHERE topic = t), 0) '
            "FROM unnest(CAST(:topics AS varchar[])) AS t ORDER BY t "
            "ON CONFLICT (topic) DO NOTHING"
        ),
        "save_offsets": (
            "UPDATE stream_offsets SET next_offset = n.next_offset "
            "FROM unnest(CAST(:topics AS varchar[]), CAST(:nexts AS bigint[])) "
            "AS n(topic, next_offset) WHERE stream_offsets.topic = n.topic"
        ),
        "savepoint": "SAVEPOINT strongroom_append",
        "rollback_to_savepoint": "ROLLBACK TO SAVEPOINT strongroom_append",
        "insert": (
            f"INSERT INTO stream_records ({_COLUMNS}) "
            "SELECT * FROM unnest(CAST(:topics AS varchar[]), CAST(:offsets AS bigint[]), "
            "CAST(:tenants AS varchar[]), CAST(:ids AS varchar[]), CAST(:keys AS varchar[]), "
            "CAST(:times AS float8[]), CAST(:payloads AS bytea[])) "
            "ON CONFLICT ON CONSTRAINT stream_records_idempotency DO NOTHING "
            "RETURNING tenant, topic, record_id"
        ),
        "read": (
            f"SELECT {_COLUMNS} FROM stream_records WHERE topic = :topic AND tenant = :tenant "
            'AND "offset" > :after ORDER BY "offset" LIMIT :limit'
        ),
        "lock_group": (
            "SELECT next_offset FROM consumer_groups WHERE tenant = :tenant AND topic = :topic "
            "AND group_name = :group FOR UPDATE"
        ),
        "lock_groups_of": (
            "SELECT next_offset FROM consumer_groups WHERE tenant = :tenant AND topic = :topic "
            "ORDER BY group_name FOR UPDATE"
        ),
        "create_group": upkeep.CREATE_GROUP,
        "move_group": upkeep.MOVE_GROUP,
        "drop_pending": upkeep.DROP_PENDING,
        "expired": (
            'SELECT p."offset" AS pending_offset, p.deliveries, r.topic, r."offset", r.tenant, '
            "r.record_id, r.key, r.appended_at, r.payload FROM consumer_pending p "
            f"LEFT JOIN LATERAL (SELECT {_COLUMNS} FROM stream_records "
            'WHERE topic = p.topic AND "offset" = p."offset" AND tenant = p.tenant LIMIT 1) AS r '
            "ON true WHERE p.tenant = :tenant AND p.topic = :topic "
            'AND p.group_name = :group AND p.visible_at <= :now ORDER BY p."offset" '
            "LIMIT :limit FOR UPDATE OF p"
        ),
        "settle": (
            "DELETE FROM consumer_pending WHERE tenant = :tenant AND topic = :topic "
            'AND group_name = :group AND "offset" = ANY(CAST(:offsets AS bigint[]))'
        ),
        "redeliver": (
            "UPDATE consumer_pending SET deliveries = deliveries + 1, visible_at = :visible, "
            "consumer = :consumer WHERE tenant = :tenant AND topic = :topic "
            'AND group_name = :group AND "offset" = ANY(CAST(:offsets AS bigint[]))'
        ),
        "fresh": (
            f"SELECT {_COLUMNS} FROM stream_records WHERE topic = :topic AND tenant = :tenant "
            'AND "offset" >= :cursor ORDER BY "offset" LIMIT :limit'
        ),
        "deliver": (
            'INSERT INTO consumer_pending (tenant, topic, group_name, "offset", consumer, '
            "deliveries, visible_at) SELECT :tenant, :topic, :group, o, :consumer, 1, :visible "
            "FROM unnest(CAST(:offsets AS bigint[])) AS o"
        ),
        "advance": (
            "UPDATE consumer_groups SET next_offset = :next WHERE tenant = :tenant "
            "AND topic = :topic AND group_name = :group"
        ),
        "dead_letters": (
            'SELECT r."offset", r.payload, p.replayed_at FROM stream_records r '
            "LEFT JOIN dead_letter_replays p ON p.topic = r.topic "
            'AND p.dead_letter_offset = r."offset" '
            'WHERE r.topic = :topic AND r.tenant = :tenant ORDER BY r."offset"'
        ),
        "offset_at": (
            'SELECT min("offset") FROM stream_records '
            "WHERE topic = :topic AND tenant = :tenant AND appended_at >= :at"
        ),
        "group_states": (
            "SELECT g.topic, g.tenant, g.group_name, "
            "(SELECT count(*) FROM stream_records r WHERE r.topic = g.topic "
            'AND r.tenant = g.tenant AND r."offset" >= g.next_offset), '
            "(SELECT count(*) FROM consumer_pending p WHERE p.tenant = g.tenant "
            "AND p.topic = g.topic AND p.group_name = g.group_name) "
            "FROM consumer_groups g ORDER BY g.topic, g.tenant, g.group_name"
        ),
        "trim_tenants": "SELECT DISTINCT tenant FROM stream_records WHERE topic = :topic",
        # The newest record that falls outside the kept ones, and the settled floors.
        "trim_floors": (
            "SELECT "
            '(SELECT "offset" FROM stream_records WHERE topic = :topic AND tenant = :tenant '
            'ORDER BY "offset" DESC LIMIT 1 OFFSET :keep), ' + upkeep.SETTLED_FLOOR_COLUMNS
        ),
        "drop_replay_marks_below": (
            "DELETE FROM dead_letter_replays WHERE topic = :topic AND dead_letter_offset IN "
            '(SELECT "offset" FROM stream_records WHERE topic = :topic AND tenant = :tenant '
            'AND "offset" < :below)'
        ),
        "drop_records_below": (
            "DELETE FROM stream_records "
            'WHERE topic = :topic AND tenant = :tenant AND "offset" < :below'
        ),
        "mark_replayed": (
            "INSERT INTO dead_letter_replays (topic, dead_letter_offset, replayed_at) "
            "SELECT :topic, o, :now FROM unnest(CAST(:offsets AS bigint[])) AS o "
            "ON CONFLICT DO NOTHING RETURNING dead_letter_offset"
        ),
        "requeue": (
            'INSERT INTO consumer_pending (tenant, topic, group_name, "offset", consumer, '
            "deliveries, visible_at) SELECT :tenant, :topic, :group, o, '', 0, :now "
            "FROM unnest(CAST(:offsets AS bigint[])) AS o "
            'ON CONFLICT (tenant, topic, group_name, "offset") DO UPDATE '
            "SET consumer = '', deliveries = 0, visible_at = excluded.visible_at"
        ),
        "erase_records": "DELETE FROM stream_records WHERE tenant = :tenant",
        "erase_pending": "DELETE FROM consumer_pending WHERE tenant = :tenant",
        "erase_groups": "DELETE FROM consumer_groups WHERE tenant = :tenant",
        "length": (
            "SELECT coalesce((SELECT next_offset FROM stream_offsets WHERE topic = :topic), "
            '(SELECT max("offset") + 1 FROM stream_records WHERE topic = :topic), 0)'
        ),
        "writable": (
            "SELECT current_setting('transaction_read_only'), "
            "(SELECT count(*) FROM (SELECT 1 FROM stream_offsets LIMIT 1) AS probe)"
        ),
    }.items()
}


def _record(row: Row[Any]) -> StoredRecord:
    topic, offset, tenant, record_id, key, appended_at, payload = tuple(row)[-7:]
    return StoredRecord(topic, offset, tenant, record_id, key, appended_at, bytes(payload))


async def _lock_offsets(connection: AsyncConnection, topics: list[str]) -> dict[str, int]:
    rows = (await connection.execute(_SQL["lock_offsets"], {"topics": topics})).all()
    offsets = {topic: int(next_offset) for topic, next_offset in rows}
    missing = [topic for topic in topics if topic not in offsets]
    if missing:
        # Rule 5 seeds topics beforehand; this covers a caller that did not.
        await connection.execute(_SQL["seed_offsets"], {"topics": missing})
        rows = (await connection.execute(_SQL["lock_offsets"], {"topics": missing})).all()
        offsets.update({topic: int(next_offset) for topic, next_offset in rows})
    return offsets


Identity = tuple[str, str, str]


@dataclass(slots=True)
class _Plan:
    """Rows to insert (as columns), and each request's accepted identities and duplicates."""

    rows: dict[str, list[Any]]
    accepted: list[list[Identity]]
    duplicates: list[list[str]]
    next_offsets: dict[str, int]


def _plan(requests: Sequence[Request], offsets: dict[str, int], stored: set[Identity]) -> _Plan:
    plan = _Plan({column: [] for column in _INSERT_COLUMNS}, [], [], dict(offsets))
    seen = set(stored)
    for topic, records, now in requests:
        plan.accepted.append([])
        plan.duplicates.append([])
        for record in records:
            identity = (record.tenant, topic, record.record_id)
            if identity in seen:
                plan.duplicates[-1].append(record.record_id)
                continue
            seen.add(identity)
            plan.accepted[-1].append(identity)
            for column, value in zip(
                _INSERT_COLUMNS,
                (topic, plan.next_offsets[topic], record.tenant, record.record_id, record.key,
                 now, record.payload),
                strict=True,
            ):  # fmt: skip
                plan.rows[column].append(value)
            plan.next_offsets[topic] += 1
    return plan


async def _insert(connection: AsyncConnection, plan: _Plan) -> set[Identity]:
    if not plan.rows["ids"]:
        return set()
    result = await connection.execute(_SQL["insert"], plan.rows)
    return {(row[0], row[1], row[2]) for row in result}


async def append_in(connection: AsyncConnection, requests: Sequence[Request]) -> list[AppendResult]:
    """Append several requests' records in order, within the caller's transaction (rule 2).

    A record repeated in an earlier request of the same call is a duplicate,
    exactly as if that request had committed first.
    """
    topics = sorted({topic for topic, records, _ in requests if records})
    if not topics:
        return [AppendResult((), ()) for _ in requests]
    offsets = await _lock_offsets(connection, topics)
    plan = _plan(requests, offsets, set())
    await connection.execute(_SQL["savepoint"])
    inserted = await _insert(connection, plan)
    if len(inserted) < len(plan.rows["ids"]):
        # Some ids were stored before (a client's retry); their offsets would be
        # gaps. Under the lock nothing else changes meanwhile, so the insert is
        # redone without them.
        stored = {identity for ids in plan.accepted for identity in ids} - inserted
        await connection.execute(_SQL["rollback_to_savepoint"])
        plan = _plan(requests, offsets, stored)
        inserted = await _insert(connection, plan)
    if inserted:
        await connection.execute(
            _SQL["save_offsets"],
            {"topics": list(plan.next_offsets), "nexts": list(plan.next_offsets.values())},
        )
    # Should a writer have bypassed the lock, the constraint still turned its
    # record into a duplicate here (leaving a gap), never into a second copy.
    return [
        AppendResult(
            tuple(identity[2] for identity in ids if identity in inserted),
            (*dups, *(identity[2] for identity in ids if identity not in inserted)),
        )
        for ids, dups in zip(plan.accepted, plan.duplicates, strict=True)
    ]


class PostgresEventLog(EventLog):
    """``EventLog`` on PostgreSQL through an async SQLAlchemy engine, with group commit."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        max_queued_weight: int,
        clock: Clock | None = None,
        max_batch_weight: int = MAX_BATCH_WEIGHT,
    ) -> None:
        self._engine = engine
        self._clock = clock or SystemClock()
        self._seeded: set[str] = set()
        self._writer: GroupCommit[list[Request], list[AppendResult]] = GroupCommit(
            self._commit,
            max_queued_weight=max_queued_weight,
            max_batch_weight=max_batch_weight,
            what="event log",
        )

    @property
    def queued_events(self) -> int:
        return self._writer.queued_weight

    async def transaction(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run ``work`` in one transaction; driver errors become ``StorageUnavailable``."""
        async with translate_errors(), self._engine.begin() as connection:
            return await work(connection)

    async def ensure_topics(self, topics: Iterable[str]) -> None:
        """Give topics their offset counter (once per process; rule 5)."""
        missing = sorted(set(topics) - self._seeded)
        if missing:
            await self.transaction(
                lambda connection: connection.execute(_SQL["seed_offsets"], {"topics": missing})
            )
            self._seeded.update(missing)

    # -- writes ---------------------------------------------------------------

    async def _commit(self, payloads: list[list[Request]]) -> list[list[AppendResult] | Exception]:
        flat = [request for requests in payloads for request in requests]
        try:
            results = await self._append(flat)
        except Exception as exc:
            if len(payloads) == 1 or not retry_alone(exc):
                return [exc] * len(payloads)
            return [await self._alone(requests) for requests in payloads]
        outcomes: list[list[AppendResult] | Exception] = []
        start = 0
        for requests in payloads:
            outcomes.append(results[start : start + len(requests)])
            start += len(requests)
        return outcomes

    async def _append(self, requests: list[Request]) -> list[AppendResult]:
        await self.ensure_topics(topic for topic, records, _ in requests if records)
        return await self.transaction(lambda connection: append_in(connection, requests))

    async def _alone(self, requests: list[Request]) -> list[AppendResult] | Exception:
        try:
            return await self._append(requests)
        except Exception as exc:
            return exc

    async def append(self, topic: str, records: Sequence[NewRecord]) -> AppendResult:
        (result,) = await self._writer.submit(
            [(topic, records, self._clock.now())], weight=max(1, len(records))
        )
        return result

    async def append_together(
        self, batches: Sequence[tuple[str, Sequence[NewRecord]]]
    ) -> list[AppendResult]:
        now = self._clock.now()
        return await self._writer.submit(
            [(topic, records, now) for topic, records in batches],
            weight=max(1, sum(len(records) for _, records in batches)),
        )

    async def group_read(
        self,
        topic: str,
        group: str,
        *,
        tenant: str,
        consumer: str,
        limit: int,
        visibility_timeout: float,
        max_deliveries: int,
    ) -> list[Delivery]:
        now = self._clock.now()
        await self.ensure_topics([dead_letter_topic(topic)])
        key = {"tenant": tenant, "topic": topic, "group": group}

        async def work(connection: AsyncConnection) -> list[Delivery]:
            cursor = await self._lock_group(connection, key, now)
            expired = (
                await connection.execute(_SQL["expired"], {**key, "now": now, "limit": limit})
            ).all()
            deliveries: list[Delivery] = []
            settled: list[int] = []
            redelivered: list[int] = []
            letters: list[NewRecord] = []
            for row in expired:
                offset, count = int(row[0]), int(row[1])
                record = None if row.topic is None else _record(row)
                if record is None or count >= max_deliveries:
                    settled.append(offset)
                    if record is not None:
                        letters.append(dead_letter_record(record, group, count, now))
                    continue
                redelivered.append(offset)
                deliveries.append(Delivery(record, count + 1))
            visible = now + visibility_timeout
            if settled:
                await connection.execute(_SQL["settle"], {**key, "offsets": settled})
            if redelivered:
                await connection.execute(
                    _SQL["redeliver"],
                    {**key, "offsets": redelivered, "visible": visible, "consumer": consumer},
                )
            if letters:
                await append_in(connection, [(dead_letter_topic(topic), letters, now)])
            room = limit - len(deliveries)
            if room > 0:
                fresh = [
                    _record(row)
                    for row in await connection.execute(
                        _SQL["fresh"], {**key, "cursor": cursor, "limit": room}
                    )
                ]
                if fresh:
                    offsets = [record.offset for record in fresh]
                    await connection.execute(
                        _SQL["deliver"],
                        {**key, "offsets": offsets, "consumer": consumer, "visible": visible},
                    )
                    await connection.execute(_SQL["advance"], {**key, "next": offsets[-1] + 1})
                    deliveries.extend(Delivery(record, 1) for record in fresh)
            deliveries.sort(key=lambda delivery: delivery.record.offset)
            return deliveries

        return await self.transaction(work)

    @staticmethod
    async def _lock_group(connection: AsyncConnection, key: dict[str, str], now: float) -> int:
        cursor = (await connection.execute(_SQL["lock_group"], key)).scalar()
        if cursor is None:
            await connection.execute(_SQL["create_group"], {**key, "now": now})
            cursor = (await connection.execute(_SQL["lock_group"], key)).scalar_one()
        return int(cursor)

    async def group_ack(
        self, topic: str, group: str, *, tenant: str, offsets: Sequence[int]
    ) -> int:
        if not offsets:
            return 0
        parameters = {"tenant": tenant, "topic": topic, "group": group, "offsets": list(offsets)}

        async def work(connection: AsyncConnection) -> int:
            return int((await connection.execute(_SQL["settle"], parameters)).rowcount)

        return await self.transaction(work)

    async def replay_dead_letters(
        self,
        topic: str,
        *,
        tenant: str,
        group: str,
        dead_letter_offsets: Sequence[int] | None,
    ) -> int:
        now = self._clock.now()
        wanted = None if dead_letter_offsets is None else set(dead_letter_offsets)

        async def work(connection: AsyncConnection) -> int:
            chosen = [
                letter
                for letter in await self._dead_letters_in(connection, topic, tenant, group, None)
                if not letter.replayed and (wanted is None or letter.dead_letter_offset in wanted)
            ]
            if not chosen:
                return 0
            # The replay mark is taken first: a concurrent replay of the same letter
            # finds it taken and leaves the pending delivery alone.
            marked = {
                int(row[0])
                for row in await connection.execute(
                    _SQL["mark_replayed"],
                    {
                        "topic": dead_letter_topic(topic),
                        "now": now,
                        "offsets": [letter.dead_letter_offset for letter in chosen],
                    },
                )
            }
            replayed = [letter for letter in chosen if letter.dead_letter_offset in marked]
            if replayed:
                await connection.execute(
                    _SQL["requeue"],
                    {
                        "tenant": tenant, "topic": topic, "group": group, "now": now,
                        "offsets": sorted({letter.offset for letter in replayed}),
                    },
                )  # fmt: skip
            return len(replayed)

        return await self.transaction(work)

    async def offset_at(self, topic: str, *, tenant: str, at: float) -> int | None:
        async with translate_errors(), self._engine.connect() as connection:
            first = (
                await connection.execute(
                    _SQL["offset_at"], {"topic": topic, "tenant": tenant, "at": at}
                )
            ).scalar()
        return None if first is None else int(first)

    async def rewind_group(self, topic: str, group: str, *, tenant: str, offset: int) -> None:
        key = {"tenant": tenant, "topic": topic, "group": group}
        now = self._clock.now()

        async def work(connection: AsyncConnection) -> None:
            # The group's row lock keeps a concurrent read from delivering past the move.
            await self._lock_group(connection, key, now)
            await connection.execute(_SQL["move_group"], {**key, "offset": offset})
            await connection.execute(_SQL["drop_pending"], key)

        await self.transaction(work)

    async def group_states(self) -> list[GroupState]:
        found: list[GroupState] = []
        letters: dict[tuple[str, str], Counter[str]] = {}
        async with translate_errors(), self._engine.connect() as connection:
            for topic, tenant, group, lag, pending in await connection.execute(
                _SQL["group_states"]
            ):
                if (tenant, topic) not in letters:
                    rows = await connection.execute(
                        _SQL["dead_letters"],
                        {"topic": dead_letter_topic(topic), "tenant": tenant},
                    )
                    letters[(tenant, topic)] = upkeep.unreplayed_dead_letters(rows)[0]
                dead = letters[(tenant, topic)][group]
                found.append(GroupState(topic, tenant, group, int(lag), int(pending), dead))
        return found

    async def trim(self, topic: str, *, max_records: int) -> int:
        async def work(connection: AsyncConnection) -> int:
            trimmed = 0
            tenants = await connection.execute(_SQL["trim_tenants"], {"topic": topic})
            for (tenant,) in tenants.all():
                key = {"topic": topic, "tenant": tenant}
                # Lock the tenant's groups: a read moving a group past the bound
                # while we delete would lose what it was about to deliver.
                await connection.execute(_SQL["lock_groups_of"], key)
                newest, groups, pending = (
                    await connection.execute(_SQL["trim_floors"], {**key, "keep": max_records})
                ).one()
                rows = await connection.execute(
                    _SQL["dead_letters"],
                    {"topic": dead_letter_topic(topic), "tenant": tenant},
                )
                _, dead = upkeep.unreplayed_dead_letters(rows)
                below = upkeep.trim_bound(newest, groups, pending, dead)
                if below is None:
                    continue
                await connection.execute(_SQL["drop_replay_marks_below"], {**key, "below": below})
                dropped = await connection.execute(
                    _SQL["drop_records_below"], {**key, "below": below}
                )
                trimmed += int(dropped.rowcount)
            return trimmed

        return await self.transaction(work)

    async def erase_tenant(self, tenant: str) -> int:
        async def work(connection: AsyncConnection) -> int:
            erased = (await connection.execute(_SQL["erase_records"], {"tenant": tenant})).rowcount
            await connection.execute(_SQL["erase_pending"], {"tenant": tenant})
            await connection.execute(_SQL["erase_groups"], {"tenant": tenant})
            return int(erased)

        return await self.transaction(work)

    # -- reads ----------------------------------------------------------------

    async def read(
        self, topic: str, *, tenant: str, after: int | None, limit: int
    ) -> list[StoredRecord]:
        parameters = {
            "topic": topic, "tenant": tenant, "after": -1 if after is None else after,
            "limit": limit,
        }  # fmt: skip
        async with translate_errors(), self._engine.connect() as connection:
            rows = await connection.execute(_SQL["read"], parameters)
            return [_record(row) for row in rows]

    @staticmethod
    async def _dead_letters_in(
        connection: AsyncConnection, topic: str, tenant: str, group: str | None, limit: int | None
    ) -> list[DeadLetter]:
        rows = await connection.execute(
            _SQL["dead_letters"], {"topic": dead_letter_topic(topic), "tenant": tenant}
        )
        return dead_letters_from(rows, group, limit)

    async def dead_letters(
        self, topic: str, *, tenant: str, group: str | None, limit: int
    ) -> list[DeadLetter]:
        async with translate_errors(), self._engine.connect() as connection:
            return await self._dead_letters_in(connection, topic, tenant, group, limit)

    async def length(self, topic: str) -> int:
        async with translate_errors(), self._engine.connect() as connection:
            counted = (await connection.execute(_SQL["length"], {"topic": topic})).scalar_one()
        # As on SQLite: the next offset to hand out (erased records leave holes,
        # never reused offsets).
        return int(counted)

    async def check_writable(self) -> None:
        self._writer.check_capacity()
        async with translate_errors(), self._engine.connect() as connection:
            read_only, _ = (await connection.execute(_SQL["writable"])).one()
        if read_only == "on":
            # A failed-over primary that came back as a replica answers reads only.
            raise StorageUnavailable("The database takes no writes (it is read-only).")

    async def aclose(self) -> None:
        """Commit what is queued; the engine is disposed by its owner (the store)."""
        await self._writer.aclose()
