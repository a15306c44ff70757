"""The embedded event log: topics as ordered chunks of records in SQLite, with
consumer groups.

Idempotency and the append happen in the same transaction, so a failure can
never leave a dedup mark without its record (the loss PayFlux has when its
dedup mark is set before the stream write fails). Records are kept a request's
run at a time (``adapters.sqlite.chunks``).
"""

from __future__ import annotations

import functools
import sqlite3
from collections import Counter
from collections.abc import Sequence

from strongroom.adapters import stream_upkeep as upkeep
from strongroom.adapters.dead_letters import dead_letter_record, dead_letters_from
from strongroom.adapters.sqlite import chunks
from strongroom.adapters.sqlite.connection import SQL_VARIABLES_PER_QUERY
from strongroom.adapters.sqlite.database import SqliteDatabase
from strongroom.adapters.sqlite.record_index import RecordIndex
from strongroom.domain.topics import dead_letter_topic
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

#: Lag per group: every chunk is contiguous, so a chunk past the group's next
#: offset counts from there to its end.
_GROUP_STATES = (
    "SELECT g.topic, g.tenant, g.group_name, "
    "(SELECT coalesce(sum(c.last_offset - max(c.first_offset, g.next_offset) + 1), 0) "
    "FROM stream_chunks c WHERE c.topic = g.topic AND c.tenant = g.tenant "
    "AND c.last_offset >= g.next_offset), "
    "(SELECT count(*) FROM consumer_pending p WHERE p.tenant = g.tenant AND p.topic = g.topic "
    "AND p.group_name = g.group_name) "
    "FROM consumer_groups g ORDER BY g.topic, g.tenant, g.group_name"
)
#: A replay mark whose dead letter is one of the tenant's records.
_TENANTS_REPLAY_MARK = (
    "EXISTS (SELECT 1 FROM stream_chunks c WHERE c.topic = dead_letter_replays.topic "
    "AND c.tenant = :tenant AND c.last_offset >= dead_letter_replays.dead_letter_offset "
    "AND c.first_offset <= dead_letter_replays.dead_letter_offset)"
)


def _next_offset(connection: sqlite3.Connection, topic: str) -> int:
    # A counter, not max(offset) + 1: after a tenant's records at the tail are
    # erased, their offsets must not be handed out again, or consumer groups
    # already past them would skip the new records.
    row = connection.execute(
        "SELECT next_offset FROM stream_offsets WHERE topic = ?", (topic,)
    ).fetchone()
    if row is not None:
        return int(row[0])
    row = connection.execute(
        "SELECT max(last_offset) FROM stream_chunks WHERE topic = ?", (topic,)
    ).fetchone()
    return 0 if row[0] is None else int(row[0]) + 1


def _append_all(
    connection: sqlite3.Connection,
    requests: list[tuple[str, Sequence[NewRecord], float]],
    *,
    index: RecordIndex,
) -> list[AppendResult]:
    """Append several requests' records in order: one index lookup per tenant and
    topic, and records of one tenant and time in shared chunks. A record repeated
    in an earlier request of the same call is a duplicate, exactly as if that
    request had committed first."""
    wanted: dict[tuple[str, str], list[str]] = {}
    offsets: dict[str, int] = {}
    for topic, records, _ in requests:
        if topic not in offsets:
            offsets[topic] = _next_offset(connection, topic)
            index.catch_up(connection, topic, offsets[topic])
        for tenant, record_id, _, _ in records:
            wanted.setdefault((tenant, topic), []).append(record_id)
    existing: set[tuple[str, str, str]] = set()
    for (tenant, topic), ids in wanted.items():
        existing.update(
            (tenant, topic, found) for found in index.stored(connection, tenant, topic, ids)
        )
    chunk_rows: list[chunks.ChunkRow] = []
    added: dict[str, list[tuple[str, str, int]]] = {}
    results = []
    # Per topic, the run still open: records of one tenant and time, at
    # consecutive offsets, which the next request's records may continue.
    open_runs: dict[str, chunks.Run] = {}
    for topic, records, now in requests:
        accepted: list[str] = []
        duplicates: list[str] = []
        topic_added = added.setdefault(topic, [])
        offset = offsets[topic]
        run = open_runs.get(topic)
        # Unpacked once, not read field by field: this loop runs once per event.
        for tenant, record_id, key, payload in records:
            identity = (tenant, topic, record_id)
            if identity in existing:
                duplicates.append(record_id)
                continue
            existing.add(identity)
            accepted.append(record_id)
            if run is None or not run.takes(tenant, now):
                if run is not None:
                    chunk_rows.append(run.row())
                run = open_runs[topic] = chunks.Run(topic, tenant, now, offset)
            run.records.append((record_id, key, payload))
            topic_added.append((tenant, record_id, offset))
            offset += 1
        offsets[topic] = offset
        results.append(AppendResult(tuple(accepted), tuple(duplicates)))
    chunk_rows += [run.row() for run in open_runs.values()]
    connection.executemany(chunks.INSERT, chunk_rows)
    connection.executemany(
        "INSERT INTO stream_offsets (topic, next_offset) VALUES (?, ?) "
        "ON CONFLICT (topic) DO UPDATE SET next_offset = excluded.next_offset",
        list(offsets.items()),
    )
    for topic, topic_rows in added.items():
        if topic_rows:
            index.added(topic, topic_rows, offsets[topic])
    return results


def _append_now(
    connection: sqlite3.Connection,
    requests: list[tuple[str, Sequence[NewRecord]]],
    *,
    clock: Clock,
    index: RecordIndex,
) -> list[AppendResult]:
    """``_append_all`` of requests gathered into one commit, appended at one time:
    then a tenant's concurrent requests to a topic share chunks (chunks rule 2)."""
    now = clock.now()
    return _append_all(
        connection, [(topic, records, now) for topic, records in requests], index=index
    )


def _dead_letter_rows(
    connection: sqlite3.Connection, topic: str, tenant: str
) -> list[tuple[int, bytes, float | None]]:
    """(offset, payload, replayed at) of each of the tenant's dead letters of ``topic``."""
    letters = dead_letter_topic(topic)
    replayed = dict(
        connection.execute(
            "SELECT dead_letter_offset, replayed_at FROM dead_letter_replays WHERE topic = ?",
            (letters,),
        ).fetchall()
    )
    return [
        (record.offset, record.payload, replayed.get(record.offset))
        for record in chunks.read(connection, letters, tenant, 0, None)
    ]


def _newest_beyond(
    connection: sqlite3.Connection, topic: str, tenant: str, keep: int
) -> int | None:
    """The offset of the tenant's newest record past its ``keep`` newest, if any."""
    rows = connection.execute(
        "SELECT first_offset, last_offset FROM stream_chunks WHERE topic = ? AND tenant = ? "
        "ORDER BY last_offset DESC",
        (topic, tenant),
    )
    for first, last in rows:
        if keep <= last - first:
            rows.close()
            return int(last) - keep
        keep -= last - first + 1
    return None


def _drop_below(connection: sqlite3.Connection, topic: str, tenant: str, below: int) -> int:
    """Delete the tenant's records of ``topic`` below offset ``below``; returns how many.

    A chunk that reaches past ``below`` loses its older records only (chunks rule 1).
    """
    key = (topic, tenant, below)
    (dropped,) = connection.execute(
        "SELECT coalesce(sum(min(last_offset, :below - 1) - first_offset + 1), 0) "
        "FROM stream_chunks WHERE topic = :topic AND tenant = :tenant "
        "AND first_offset < :below",
        {"topic": topic, "tenant": tenant, "below": below},
    ).fetchone()
    connection.execute(
        "DELETE FROM stream_chunks WHERE topic = ? AND tenant = ? AND last_offset < ?", key
    )
    straddling = connection.execute(
        "SELECT first_offset, last_offset, lengths, records FROM stream_chunks "
        "WHERE topic = ? AND tenant = ? AND last_offset >= ? AND first_offset < ?",
        (*key, below),
    ).fetchall()
    for first, last, lengths, records in straddling:
        kept = chunks.decode(lengths, records)[below - first :]
        kept_lengths, kept_records = chunks.encode(kept)
        connection.execute(
            "UPDATE stream_chunks SET first_offset = ?, lengths = ?, records = ? "
            "WHERE topic = ? AND last_offset = ?",
            (below, kept_lengths, kept_records, topic, last),
        )
    return int(dropped)


class SqliteEventLog(EventLog):
    """``EventLog`` on a SQLite file in WAL mode, with group commit."""

    def __init__(self, database: SqliteDatabase, *, clock: Clock | None = None) -> None:
        self._database = database
        self._writer = database.writer
        self._index = database.record_index
        self._clock = clock or SystemClock()
        # One object for the writer to gather concurrent appends under (rule of
        # ``submit_combined``): a fresh partial per call would never combine.
        self._append_combined = functools.partial(_append_now, clock=self._clock, index=self._index)

    @property
    def queued_events(self) -> int:
        return self._writer.queued_weight

    # -- writes ---------------------------------------------------------------

    async def append(self, topic: str, records: Sequence[NewRecord]) -> AppendResult:
        # Appends queued for the same commit are written by one call, so many
        # concurrent single-event requests cost one dedup query and one insert.
        result: AppendResult = await self._writer.submit_combined(
            self._append_combined, (topic, records), weight=max(1, len(records))
        )
        return result

    async def append_together(
        self, batches: Sequence[tuple[str, Sequence[NewRecord]]]
    ) -> list[AppendResult]:
        now = self._clock.now()
        requests = [(topic, records, now) for topic, records in batches]
        results: list[AppendResult] = await self._writer.submit(
            lambda connection: _append_all(connection, requests, index=self._index),
            weight=max(1, sum(len(records) for _, records in batches)),
        )
        return results

    @staticmethod
    def append_in(
        index: RecordIndex,
        connection: sqlite3.Connection,
        topic: str,
        records: Sequence[NewRecord],
        now: float,
    ) -> AppendResult:
        """Append within the caller's transaction (one request's records)."""
        return _append_all(connection, [(topic, records, now)], index=index)[0]

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

        def operation(connection: sqlite3.Connection) -> list[Delivery]:
            return self._group_read_in(
                connection, topic, group, tenant, consumer, limit,
                now, visibility_timeout, max_deliveries,
            )  # fmt: skip

        return await self._writer.submit(operation)

    def _group_read_in(
        self,
        connection: sqlite3.Connection,
        topic: str,
        group: str,
        tenant: str,
        consumer: str,
        limit: int,
        now: float,
        visibility_timeout: float,
        max_deliveries: int,
    ) -> list[Delivery]:
        connection.execute(
            "INSERT OR IGNORE INTO consumer_groups VALUES (?, ?, ?, 0, ?)",
            (tenant, topic, group, now),
        )
        group_key = (tenant, topic, group)
        deliveries: list[Delivery] = []
        expired = connection.execute(
            'SELECT "offset", deliveries FROM consumer_pending WHERE tenant = ? AND topic = ? '
            'AND group_name = ? AND visible_at <= ? ORDER BY "offset" LIMIT ?',
            (*group_key, now, limit),
        ).fetchall()
        for offset, count in expired:
            record = chunks.record_at(connection, topic, tenant, offset)
            if record is None or count >= max_deliveries:
                connection.execute(
                    "DELETE FROM consumer_pending WHERE tenant = ? AND topic = ? "
                    'AND group_name = ? AND "offset" = ?',
                    (*group_key, offset),
                )
                if record is not None:
                    self._dead_letter(connection, record, group, count, now)
                continue
            connection.execute(
                "UPDATE consumer_pending SET deliveries = ?, visible_at = ?, consumer = ? "
                'WHERE tenant = ? AND topic = ? AND group_name = ? AND "offset" = ?',
                (count + 1, now + visibility_timeout, consumer, *group_key, offset),
            )
            deliveries.append(Delivery(record, count + 1))
        room = limit - len(deliveries)
        if room > 0:
            (cursor,) = connection.execute(
                "SELECT next_offset FROM consumer_groups WHERE tenant = ? AND topic = ? "
                "AND group_name = ?",
                group_key,
            ).fetchone()
            fresh = chunks.read(connection, topic, tenant, cursor, room)
            if fresh:
                connection.executemany(
                    "INSERT INTO consumer_pending VALUES (?, ?, ?, ?, ?, 1, ?)",
                    [
                        (*group_key, record.offset, consumer, now + visibility_timeout)
                        for record in fresh
                    ],
                )
                connection.execute(
                    "UPDATE consumer_groups SET next_offset = ? WHERE tenant = ? AND topic = ? "
                    "AND group_name = ?",
                    (fresh[-1].offset + 1, *group_key),
                )
                deliveries.extend(Delivery(record, 1) for record in fresh)
        deliveries.sort(key=lambda delivery: delivery.record.offset)
        return deliveries

    def _dead_letter(
        self,
        connection: sqlite3.Connection,
        record: StoredRecord,
        group: str,
        deliveries: int,
        now: float,
    ) -> None:
        self.append_in(
            self._index,
            connection,
            dead_letter_topic(record.topic),
            [dead_letter_record(record, group, deliveries, now)],
            now,
        )

    async def group_ack(
        self, topic: str, group: str, *, tenant: str, offsets: Sequence[int]
    ) -> int:
        def operation(connection: sqlite3.Connection) -> int:
            settled = 0
            for start in range(0, len(offsets), SQL_VARIABLES_PER_QUERY):
                chunk = list(offsets[start : start + SQL_VARIABLES_PER_QUERY])
                marks = ",".join("?" * len(chunk))
                cursor = connection.execute(
                    "DELETE FROM consumer_pending WHERE tenant = ? AND topic = ? "
                    f'AND group_name = ? AND "offset" IN ({marks})',
                    (tenant, topic, group, *chunk),
                )
                settled += cursor.rowcount
            return settled

        return await self._writer.submit(operation)

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

        def operation(connection: sqlite3.Connection) -> int:
            replayed = 0
            for letter in self._dead_letters_in(connection, topic, tenant, group, None):
                if letter.replayed or (
                    wanted is not None and letter.dead_letter_offset not in wanted
                ):
                    continue
                connection.execute(
                    "INSERT OR REPLACE INTO consumer_pending VALUES (?, ?, ?, ?, '', 0, ?)",
                    (tenant, topic, group, letter.offset, now),
                )
                connection.execute(
                    "INSERT INTO dead_letter_replays VALUES (?, ?, ?)",
                    (dead_letter_topic(topic), letter.dead_letter_offset, now),
                )
                replayed += 1
            return replayed

        return await self._writer.submit(operation)

    # -- reads ----------------------------------------------------------------

    async def read(
        self, topic: str, *, tenant: str, after: int | None, limit: int
    ) -> list[StoredRecord]:
        start = 0 if after is None else after + 1
        return await self._database.read(lambda c: chunks.read(c, topic, tenant, start, limit))

    def _dead_letters_in(
        self,
        connection: sqlite3.Connection,
        topic: str,
        tenant: str,
        group: str | None,
        limit: int | None,
    ) -> list[DeadLetter]:
        return dead_letters_from(_dead_letter_rows(connection, topic, tenant), group, limit)

    async def dead_letters(
        self, topic: str, *, tenant: str, group: str | None, limit: int
    ) -> list[DeadLetter]:
        return await self._database.read(
            lambda c: self._dead_letters_in(c, topic, tenant, group, limit)
        )

    async def offset_at(self, topic: str, *, tenant: str, at: float) -> int | None:
        # Every record of a chunk was appended at the chunk's time (chunks rule 2).
        rows = await self._database.read(
            lambda c: c.execute(
                "SELECT min(first_offset) FROM stream_chunks "
                "WHERE topic = ? AND tenant = ? AND appended_at >= ?",
                (topic, tenant, at),
            ).fetchall()
        )
        first = rows[0][0]
        return None if first is None else int(first)

    async def rewind_group(self, topic: str, group: str, *, tenant: str, offset: int) -> None:
        key = {"tenant": tenant, "topic": topic, "group": group}
        now = self._clock.now()

        def operation(connection: sqlite3.Connection) -> None:
            connection.execute(upkeep.CREATE_GROUP, {**key, "now": now})
            connection.execute(upkeep.MOVE_GROUP, {**key, "offset": offset})
            connection.execute(upkeep.DROP_PENDING, key)

        await self._writer.submit(operation)

    async def group_states(self) -> list[GroupState]:
        def states(connection: sqlite3.Connection) -> list[GroupState]:
            found: list[GroupState] = []
            letters: dict[tuple[str, str], Counter[str]] = {}
            for topic, tenant, group, lag, pending in connection.execute(_GROUP_STATES).fetchall():
                if (tenant, topic) not in letters:
                    rows = _dead_letter_rows(connection, topic, tenant)
                    letters[(tenant, topic)] = upkeep.unreplayed_dead_letters(rows)[0]
                dead = letters[(tenant, topic)][group]
                found.append(GroupState(topic, tenant, group, int(lag), int(pending), dead))
            return found

        return await self._database.read(states)

    async def trim(self, topic: str, *, max_records: int) -> int:
        def operation(connection: sqlite3.Connection) -> int:
            trimmed = 0
            tenants = connection.execute(
                "SELECT DISTINCT tenant FROM stream_chunks WHERE topic = ?", (topic,)
            ).fetchall()
            for (tenant,) in tenants:
                key = {"topic": topic, "tenant": tenant}
                groups, pending = connection.execute(upkeep.SETTLED_FLOORS, key).fetchone()
                _, dead = upkeep.unreplayed_dead_letters(
                    _dead_letter_rows(connection, topic, tenant)
                )
                newest = _newest_beyond(connection, topic, tenant, max_records)
                below = upkeep.trim_bound(newest, groups, pending, dead)
                if below is None:
                    continue
                connection.execute(
                    "DELETE FROM dead_letter_replays WHERE topic = :topic "
                    f"AND dead_letter_offset < :below AND {_TENANTS_REPLAY_MARK}",
                    {**key, "below": below},
                )
                trimmed += _drop_below(connection, topic, tenant, below)
            return trimmed

        # Alone in its transaction, as every deletion of records is (record_index rule 3).
        return await self._writer.submit(operation, alone=True)

    async def erase_tenant(self, tenant: str) -> int:
        def operation(connection: sqlite3.Connection) -> int:
            # Replay marks belong to dead-letter offsets; erased ones must not mark
            # whatever record a later offset points to.
            connection.execute(
                f"DELETE FROM dead_letter_replays WHERE {_TENANTS_REPLAY_MARK}", {"tenant": tenant}
            )
            (erased,) = connection.execute(
                "SELECT coalesce(sum(last_offset - first_offset + 1), 0) FROM stream_chunks "
                "WHERE tenant = ?",
                (tenant,),
            ).fetchone()
            connection.execute("DELETE FROM stream_chunks WHERE tenant = ?", (tenant,))
            connection.execute("DELETE FROM consumer_pending WHERE tenant = ?", (tenant,))
            connection.execute("DELETE FROM consumer_groups WHERE tenant = ?", (tenant,))
            self._index.forget_tenant_after_commit(tenant)
            return int(erased)

        # Alone in its transaction, as every deletion of records is (record_index rule 3).
        return await self._writer.submit(operation, alone=True)

    async def length(self, topic: str) -> int:
        # The next offset to hand out: offsets are dense from 0 (erased records
        # leave holes but their offsets are never reused).
        def counted(connection: sqlite3.Connection) -> int:
            return _next_offset(connection, topic)

        return await self._database.read(counted)

    async def check_writable(self) -> None:
        def probe(connection: sqlite3.Connection) -> None:
            connection.execute("SELECT 1 FROM stream_chunks LIMIT 1").fetchall()

        await self._writer.submit(probe)

    async def aclose(self) -> None:
        """The database is shared and closed by its owner (the store)."""
