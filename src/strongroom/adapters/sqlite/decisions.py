"""Risk decisions in the SQLite file, committed in groups by its one writer.

A decision per SQLite transaction caps evaluations at the disk's fsync rate;
here concurrent decisions share the transaction (and the fsync) that the
event log and the audit log already share.

Rules:

1. Every write goes through the database's ``GroupCommitWriter``: a put
   returns only after the COMMIT that holds its row (writer rule 1). Puts are
   handed to the writer in batches, one batch at a time: those made while a
   batch is with the writer gather and follow as the next one. On one core,
   the writer would otherwise wake from each fsync to commit the two or three
   decisions made meanwhile, and a commit's fixed cost (mostly the fsync, in
   the kernel) would be paid that often.
2. With the SQLite event log (``publishes_to``), a decision's record on
   ``risk.decisions`` is appended in the decision's own transaction
   (``SqliteEventLog.append_in``): both are committed, or neither.
3. One decision per (tenant, transaction id) and per (tenant,
   Idempotency-Key): the insert does nothing on a conflict, so the first
   writer wins, also against a put in the same commit or another process on
   the same file, and the loser reads the winner in that transaction and
   publishes nothing.
4. Reads are point queries on an index, run on the calling thread's own read
   connection: in WAL mode a reader never waits for the writer, and such a
   query costs less than handing it to a worker thread.
5. At most ``MAX_GATHERED`` decisions wait for the writer; past that a put
   raises ``Backpressure`` at once, as the writer's own queue does.
6. When a batch comes back from the writer with fewer than ``LINGER_BELOW``
   decisions gathered behind it, those wait up to ``LINGER_SECONDS`` for more
   before they are handed over (PostgreSQL's ``commit_delay``, for the same
   reason). Under steady load each commit then holds several decisions instead
   of one or two, and a commit's CPU (its WAL pages, the fsync in the kernel,
   waking the writer and the event loop) is paid that much less often: about
   a sixth less CPU per evaluation at 1,000 evaluations/s on one core. A
   decision made while nothing is in flight is handed over at once, so a
   lightly loaded gateway never waits.
7. Prunes and erasures delete in chunks of ``DELETE_CHUNK`` rows, each chunk
   its own writer operation, so a long delete never holds back the commits
   that evaluations are waiting for.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from functools import partial
from typing import Final

from strongroom.adapters.sql.risk import DecisionPut, SqlDecisionJournal, stored_record
from strongroom.adapters.sqlite.database import SqliteDatabase
from strongroom.adapters.sqlite.log import SqliteEventLog
from strongroom.adapters.sqlite.record_index import RecordIndex
from strongroom.domain.risk import DecisionRecord
from strongroom.errors import Backpressure, StorageUnavailable, StrongroomError
from strongroom.ports import Clock, NewRecord

DELETE_CHUNK: Final = 500
#: Decisions handed to the writer at once, and waiting for it at most.
MAX_BATCH: Final = 512
MAX_GATHERED: Final = 8192
#: Rule 6: fewer decisions than this behind a returning batch wait for more, at most this long.
LINGER_BELOW: Final = 8
LINGER_SECONDS: Final = 0.0015

_INSERT_ROWS: Final = (
    "INSERT INTO risk_decisions "
    "(trace_id, tenant, transaction_id, idempotency_key, record, created_at) VALUES "
)
_ON_CONFLICT: Final = " ON CONFLICT DO NOTHING"
#: Six parameters a row, well below SQLite's limit of 32,766 per statement.
_ROWS_PER_INSERT: Final = 500
# Both unique indexes answer this (SQLite's multi-index OR); at most one row each.
_FIND: Final = (
    "SELECT idempotency_key, record FROM risk_decisions "
    "WHERE tenant = ? AND (transaction_id = ? OR idempotency_key = ?) LIMIT 2"
)
_GET: Final = "SELECT record FROM risk_decisions WHERE trace_id = ? AND tenant = ?"
# Distinct tenants by skipping through the (tenant, created_at) index, not scanning it.
_TENANTS: Final = (
    "WITH RECURSIVE t(tenant) AS (SELECT min(tenant) FROM risk_decisions UNION ALL "
    "SELECT (SELECT min(tenant) FROM risk_decisions WHERE tenant > t.tenant) "
    "FROM t WHERE t.tenant IS NOT NULL) SELECT tenant FROM t WHERE tenant IS NOT NULL"
)
_PRUNE: Final = (
    "DELETE FROM risk_decisions WHERE rowid IN (SELECT rowid FROM risk_decisions "
    "WHERE tenant = ? AND created_at < ? LIMIT ?)"
)
_ERASE: Final = (
    "DELETE FROM risk_decisions WHERE rowid IN (SELECT rowid FROM risk_decisions "
    "WHERE tenant = ? LIMIT ?)"
)


def _winner(
    connection: sqlite3.Connection, tenant: str, transaction_id: str, key: str | None
) -> str | None:
    rows = connection.execute(_FIND, (tenant, transaction_id, key)).fetchall()
    if not rows:
        return None
    # The Idempotency-Key wins over the transaction id, as in every decision store.
    keyed = [row for row in rows if key is not None and row[0] == key]
    document: str = (keyed or rows)[0][1]
    return document


def _insert_all(connection: sqlite3.Connection, puts: list[DecisionPut]) -> set[str]:
    """Insert the batch, first writer winning; the trace ids that were stored.

    One statement for the whole batch: each statement is a round of the GIL
    between the writer thread and the event loop, which under load is what a
    commit waits for most.
    """
    stored: set[str] = set()
    for start in range(0, len(puts), _ROWS_PER_INSERT):
        chunk = puts[start : start + _ROWS_PER_INSERT]
        values = [
            value
            for put in chunk
            for value in (put.trace_id, put.tenant, put.transaction_id, put.idempotency_key,
                          put.document, put.created_at)
        ]  # fmt: skip
        statement = _INSERT_ROWS + ",".join(("(?, ?, ?, ?, ?, ?)",) * len(chunk)) + _ON_CONFLICT
        ids = [put.trace_id for put in chunk]
        if connection.execute(statement, values).rowcount == len(chunk):
            stored.update(ids)
            continue
        # Some lost to a decision stored before (or earlier in this batch): which won.
        marks = ",".join("?" * len(ids))
        rows = connection.execute(
            f"SELECT trace_id FROM risk_decisions WHERE trace_id IN ({marks})",
            ids,
        )
        stored.update(row[0] for row in rows)
    return stored


def _put_all(
    connection: sqlite3.Connection, puts: list[DecisionPut], index: RecordIndex
) -> list[str | Exception | None]:
    """Insert a batch of decisions; None for a stored one, else the winner's document
    (rule 3). Stream records of the stored ones are appended together."""
    results: list[str | Exception | None] = []
    published: dict[str, list[NewRecord]] = {}
    now = 0.0
    stored = _insert_all(connection, puts)
    for put in puts:
        if put.trace_id in stored:
            results.append(None)
            if put.published is not None:
                topic, record = put.published
                published.setdefault(topic, []).append(record)
                now = max(now, put.created_at)
            continue
        winner = _winner(connection, put.tenant, put.transaction_id, put.idempotency_key)
        # Only a trace id already taken finds no winner; a retry draws a new one.
        results.append(
            StorageUnavailable("The decision could not be stored; retry.")
            if winner is None
            else winner
        )
    for topic, records in published.items():
        SqliteEventLog.append_in(index, connection, topic, records, now)
    return results


def _settle(
    batch: list[tuple[DecisionPut, asyncio.Future[str | None]]],
    outcome: BaseException | list[str | Exception | None],
) -> None:
    for index, (_, future) in enumerate(batch):
        if future.done():
            continue
        result = outcome if isinstance(outcome, BaseException) else outcome[index]
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


def _retrieve(future: asyncio.Future[str | None]) -> None:
    # The caller may have gone away (cancelled); reading the outcome keeps asyncio
    # from reporting an exception nobody retrieved.
    if not future.cancelled():
        future.exception()


def _delete_chunk(
    statement: str, parameters: tuple[object, ...], connection: sqlite3.Connection
) -> int:
    return connection.execute(statement, (*parameters, DELETE_CHUNK)).rowcount


class SqliteDecisionStore(SqlDecisionJournal[SqliteEventLog]):
    """``DecisionJournal`` in the gateway's SQLite file (module rules)."""

    def __init__(
        self,
        database: SqliteDatabase,
        *,
        log: SqliteEventLog | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(log, clock)
        self._database = database
        self._writer = database.writer
        self._gathering: list[tuple[DecisionPut, asyncio.Future[str | None]]] = []
        self._in_flight = False
        self._lingering: asyncio.TimerHandle | None = None

    async def _submit(self, put: DecisionPut) -> str | None:
        if len(self._gathering) >= MAX_GATHERED:
            raise Backpressure("The decision store is at capacity; retry shortly.")
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)
        self._gathering.append((put, future))
        if self._lingering is not None:
            if len(self._gathering) >= LINGER_BELOW:
                self._lingering.cancel()
                self._lingering = None
                self._hand_over()
        elif len(self._gathering) == 1 and not self._in_flight:
            # Handed over on the loop's next turn: the evaluations running in
            # this one join the same batch.
            asyncio.get_running_loop().call_soon(self._hand_over_gathered)
        # A caller that goes away leaves its decision in the batch: it is
        # written all the same, as a retry would find it.
        return await future

    def _hand_over_gathered(self) -> None:
        if self._gathering and not self._in_flight and self._lingering is None:
            self._hand_over()

    def _linger(self) -> None:
        self._lingering = asyncio.get_running_loop().call_later(LINGER_SECONDS, self._lingered)

    def _lingered(self) -> None:
        self._lingering = None
        self._hand_over_gathered()

    def _hand_over(self) -> None:
        """Give the writer every gathered decision as one operation (rule 1)."""
        batch = self._gathering[:MAX_BATCH]
        del self._gathering[:MAX_BATCH]
        try:
            job = self._writer.submit(
                partial(
                    _put_all, puts=[put for put, _ in batch], index=self._database.record_index
                ),
                weight=len(batch),
            )
        except StrongroomError as exc:
            _settle(batch, exc)
            return
        self._in_flight = True
        job.add_done_callback(partial(self._handed, batch))

    def _handed(
        self,
        batch: list[tuple[DecisionPut, asyncio.Future[str | None]]],
        job: asyncio.Future[list[str | Exception | None]],
    ) -> None:
        self._in_flight = False
        _settle(batch, job.exception() or job.result())
        if len(self._gathering) >= LINGER_BELOW:
            self._hand_over()
        elif self._gathering:
            self._linger()

    async def get(self, tenant: str, trace_id: str) -> DecisionRecord | None:
        row = self._database.read_sync(lambda c: c.execute(_GET, (trace_id, tenant)).fetchone())
        return None if row is None else stored_record(row[0])

    async def find(
        self, tenant: str, *, transaction_id: str, idempotency_key: str | None
    ) -> DecisionRecord | None:
        document = self._database.read_sync(
            lambda c: _winner(c, tenant, transaction_id, idempotency_key)
        )
        return None if document is None else stored_record(document)

    async def _delete(self, statement: str, tenants: Sequence[str], *parameters: object) -> int:
        deleted = 0
        for tenant in tenants:
            while True:
                chunk: int = await self._writer.submit(
                    partial(_delete_chunk, statement, (tenant, *parameters))
                )
                deleted += chunk
                if chunk < DELETE_CHUNK:
                    break
        return deleted

    async def prune(self, before: float) -> int:
        rows = await self._database.read(lambda c: c.execute(_TENANTS).fetchall())
        return await self._delete(_PRUNE, [row[0] for row in rows], before)

    async def erase_tenant(self, tenant: str) -> int:
        return await self._delete(_ERASE, [tenant])
