"""The audit log in SQLite: records, Merkle nodes and checkpoints in the shared file.

Appends run on the file's single writer thread, which owns the tree's right
edge (a ``CompactRange``) in memory; each append stores the record, the
complete-subtree hashes it finishes and a copy on the ``payments.audit`` topic,
in one transaction. The in-memory edge is checked against the table before
each write and rebuilt from stored nodes if a transaction was lost.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence

from strongroom.adapters.sqlite.database import SqliteDatabase
from strongroom.adapters.sqlite.log import SqliteEventLog
from strongroom.domain import audit, merkle
from strongroom.domain.audit import AuditEntry, AuditRecord, StoredRow
from strongroom.domain.checkpoints import Checkpoint, SignedCheckpoint, parse
from strongroom.domain.topics import AUDIT, PLATFORM_TENANT
from strongroom.errors import Conflict, NotFound
from strongroom.ports import AuditLog, AuditQuery, NewRecord, PruneHorizon


def _get_node(connection: sqlite3.Connection) -> merkle.GetNode:
    def get(level: int, index: int) -> bytes:
        row = connection.execute(
            "SELECT hash FROM audit_nodes WHERE level = ? AND idx = ?", (level, index)
        ).fetchone()
        if row is None:
            raise LookupError(f"no audit node at level {level}, index {index}")
        return bytes(row[0])

    return get


def _record(row: tuple[int, float, bytes, bytes]) -> AuditRecord:
    seq, at, data, leaf = row
    _, _, entry, prev = audit.parse_data(bytes(data))
    return AuditRecord(seq, at, entry, prev, bytes(data), bytes(leaf))


class SqliteAuditLog(AuditLog):
    def __init__(self, database: SqliteDatabase) -> None:
        self._database = database
        self._range: merkle.CompactRange | None = None
        self._prev = audit.GENESIS_PREV

    # -- the writer thread's state --------------------------------------------------

    def _sync(self, connection: sqlite3.Connection) -> merkle.CompactRange:
        (highest,) = connection.execute("SELECT max(seq) FROM audit_records").fetchone()
        (horizon,) = connection.execute(
            "SELECT horizon FROM audit_prune_horizon WHERE id = 1"
        ).fetchone()
        size = max(horizon, -1 if highest is None else highest + 1)
        if self._range is None or self._range.size != size:
            get = _get_node(connection)
            self._range = merkle.CompactRange.from_nodes(size, get)
            self._prev = get(0, size - 1) if size else audit.GENESIS_PREV
        return self._range

    async def append(self, entries: Sequence[AuditEntry]) -> list[AuditRecord]:
        now = time.time()

        def operation(connection: sqlite3.Connection) -> list[AuditRecord]:
            tree = self._sync(connection)
            records = []
            for entry in entries:
                record = audit.build(tree.size, now, entry, self._prev)
                nodes: list[tuple[int, int, bytes]] = []
                tree.append(record.leaf, visit=lambda *node, into=nodes: into.append(node))
                self._prev = record.leaf
                connection.execute(
                    "INSERT INTO audit_records VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        record.seq, record.time, entry.tenant, record.entry.actor,
                        record.entry.action, record.entry.outcome, record.data, record.leaf,
                    ),
                )  # fmt: skip
                connection.executemany("INSERT INTO audit_nodes VALUES (?, ?, ?)", nodes)
                records.append(record)
            SqliteEventLog.append_in(
                self._database.record_index,
                connection,
                AUDIT,
                [
                    NewRecord(
                        r.entry.tenant or PLATFORM_TENANT, f"audit:{r.seq}", r.entry.action, r.data
                    )
                    for r in records
                ],
                now,
            )
            return records

        return await self._database.writer.submit(operation, weight=len(entries))

    async def checkpoint(
        self, sign: Callable[[Checkpoint], SignedCheckpoint], origin: str, now: float
    ) -> SignedCheckpoint | None:
        def operation(connection: sqlite3.Connection) -> SignedCheckpoint | None:
            tree = self._sync(connection)
            (latest,) = connection.execute(
                "SELECT max(tree_size) FROM audit_checkpoints"
            ).fetchone()
            if tree.size == 0 or (latest is not None and latest >= tree.size):
                return None
            signed = sign(Checkpoint(origin, tree.size, tree.root(), int(now)))
            connection.execute(
                "INSERT INTO audit_checkpoints VALUES (?, ?, ?, ?)",
                (tree.size, signed.checkpoint.root_hash, now, signed.text()),
            )
            return signed

        return await self._database.writer.submit(operation)

    async def prune(self, before: int) -> int:
        def operation(connection: sqlite3.Connection) -> int:
            (latest,) = connection.execute(
                "SELECT coalesce(max(tree_size), 0) FROM audit_checkpoints"
            ).fetchone()
            (horizon,) = connection.execute(
                "SELECT horizon FROM audit_prune_horizon WHERE id = 1"
            ).fetchone()
            if before > latest:
                raise Conflict("Records can be pruned only up to the newest signed checkpoint.")
            if before <= horizon:
                return 0
            connection.execute("UPDATE audit_prune_horizon SET horizon = ? WHERE id = 1", (before,))
            return connection.execute("DELETE FROM audit_records WHERE seq < ?", (before,)).rowcount

        return await self._database.writer.submit(operation)

    # -- reads ----------------------------------------------------------------------

    async def query(self, query: AuditQuery) -> list[AuditRecord]:
        clauses = ["seq > ?"]
        parameters: list[object] = [-1 if query.after is None else query.after]
        for column, value in (
            ("tenant", query.tenant),
            ("actor", query.actor),
            ("action", query.action),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                parameters.append(value)
        if query.since is not None:
            clauses.append("time >= ?")
            parameters.append(query.since)
        if query.until is not None:
            clauses.append("time < ?")
            parameters.append(query.until)
        sql = (
            f"SELECT seq, time, data, leaf FROM audit_records WHERE {' AND '.join(clauses)} "
            "ORDER BY seq LIMIT ?"
        )
        rows = await self._database.read(
            lambda c: c.execute(sql, (*parameters, query.limit)).fetchall()
        )
        return [_record(row) for row in rows]

    async def scan(self, after: int | None, limit: int) -> list[StoredRow]:
        rows = await self._database.read(
            lambda c: c.execute(
                "SELECT seq, data, leaf FROM audit_records WHERE seq > ? ORDER BY seq LIMIT ?",
                (-1 if after is None else after, limit),
            ).fetchall()
        )
        return [StoredRow(seq, bytes(data), bytes(leaf)) for seq, data, leaf in rows]

    async def size(self) -> int:
        def count(connection: sqlite3.Connection) -> int:
            (highest,) = connection.execute("SELECT max(seq) FROM audit_records").fetchone()
            (horizon,) = connection.execute(
                "SELECT horizon FROM audit_prune_horizon WHERE id = 1"
            ).fetchone()
            return int(max(horizon, -1 if highest is None else highest + 1))

        return await self._database.read(count)

    async def _with_nodes(self, work: Callable[[merkle.GetNode], object], tree_size: int) -> object:
        size = await self.size()
        if not 0 < tree_size <= size:
            # The size is not named: it would tell any tenant how busy the install is.
            raise NotFound("The audit log has no tree of that size.")
        return await self._database.read(lambda c: work(_get_node(c)))

    async def root(self, tree_size: int) -> bytes:
        result = await self._with_nodes(
            lambda get: merkle.root_from_nodes(tree_size, get), tree_size
        )
        assert isinstance(result, bytes)
        return result

    async def leaf(self, seq: int) -> bytes:
        rows = await self._database.read(
            lambda c: c.execute(
                "SELECT hash FROM audit_nodes WHERE level = 0 AND idx = ?", (seq,)
            ).fetchall()
        )
        if not rows:
            raise NotFound("There is no audit record with that sequence number.")
        return bytes(rows[0][0])

    async def inclusion_proof(self, seq: int, tree_size: int) -> list[bytes]:
        if not 0 <= seq < tree_size:
            raise NotFound("The record is not in a tree of that size.")
        result = await self._with_nodes(
            lambda get: merkle.inclusion_proof(seq, tree_size, get), tree_size
        )
        assert isinstance(result, list)
        return result

    async def consistency_proof(self, first: int, second: int) -> list[bytes]:
        if not 0 < first <= second:
            raise NotFound("Consistency proofs need 0 < first <= second.")
        result = await self._with_nodes(
            lambda get: merkle.consistency_proof(first, second, get), second
        )
        assert isinstance(result, list)
        return result

    async def checkpoints(self) -> list[SignedCheckpoint]:
        rows = await self._database.read(
            lambda c: c.execute("SELECT note FROM audit_checkpoints ORDER BY tree_size").fetchall()
        )
        return [parse(note) for (note,) in rows]

    async def horizon(self) -> PruneHorizon:
        def read(connection: sqlite3.Connection) -> PruneHorizon:
            (size,) = connection.execute(
                "SELECT horizon FROM audit_prune_horizon WHERE id = 1"
            ).fetchone()
            if not size:
                return PruneHorizon(0, audit.GENESIS_PREV)
            get = _get_node(connection)
            edge = merkle.CompactRange.from_nodes(size, get).hashes
            return PruneHorizon(int(size), get(0, size - 1), tuple(edge))

        return await self._database.read(read)
