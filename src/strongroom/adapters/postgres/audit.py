"""The audit log on PostgreSQL: records, Merkle nodes and checkpoints, one writer at a time.

Same tables and the same behaviour as the SQLite audit log, for several
gateway processes sharing one database.

Rules:
1. Every write (append, checkpoint, prune) first locks the single
   ``audit_prune_horizon`` row (``SELECT ... FOR UPDATE``), so across all
   gateways one transaction at a time extends the tree: sequence numbers stay
   consecutive and every record chains to the one committed before it. The
   tree size is read after the lock is held, never from an older snapshot.
2. An append stores the records, the complete-subtree hashes they finish and a
   copy of each record on ``payments.audit``, in one transaction.
3. The tree's right edge is cached between appends and trusted only when the
   stored size still equals its size (sizes only grow, and a tree of a given
   size never changes); it is updated only after COMMIT returned, so a lost
   transaction can never leave a wrong edge behind. Otherwise it is rebuilt
   from stored nodes in one query.
4. Concurrent appends of one process share a transaction (group commit);
   ``append`` returns only after that transaction committed.
5. Proofs and roots fetch every node they need in one query.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Final, TypeVar

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from strongroom.adapters.group_commit import GroupCommit
from strongroom.adapters.postgres.log import PostgresEventLog, append_in
from strongroom.adapters.sql.engine import retry_alone, translate_errors
from strongroom.domain import audit, merkle
from strongroom.domain.audit import AuditEntry, AuditRecord, StoredRow
from strongroom.domain.checkpoints import Checkpoint, SignedCheckpoint, parse
from strongroom.domain.topics import AUDIT, PLATFORM_TENANT
from strongroom.errors import Conflict, NotFound
from strongroom.ports import AuditLog, AuditQuery, Clock, NewRecord, PruneHorizon, SystemClock

T = TypeVar("T")
_Edge = tuple[merkle.CompactRange, bytes]
#: A write under the lock: (connection, horizon, edge copy, last leaf) -> (result, new edge).
_Work = Callable[[AsyncConnection, int, merkle.CompactRange, bytes], Awaitable[tuple[T, _Edge]]]

#: Audit entries per shared transaction; a single larger append still goes alone.
MAX_BATCH_WEIGHT: Final = 1024

_SQL: Final[dict[str, TextClause]] = {
    name: text(statement)
    for name, statement in {
        "lock": "SELECT horizon FROM audit_prune_horizon WHERE id = 1 FOR UPDATE",
        "horizon": "SELECT horizon FROM audit_prune_horizon WHERE id = 1",
        "highest": "SELECT max(seq) FROM audit_records",
        # One primary-key probe per node: LIMIT 1 keeps the planner from hashing the table.
        "nodes": (
            "SELECT w.level, w.idx, n.hash FROM unnest(CAST(:levels AS integer[]), "
            "CAST(:indexes AS bigint[])) AS w(level, idx) CROSS JOIN LATERAL "
            "(SELECT hash FROM audit_nodes WHERE level = w.level AND idx = w.idx LIMIT 1) AS n"
        ),
        "insert_records": (
            "INSERT INTO audit_records (seq, time, tenant, actor, action, outcome, data, leaf) "
            "SELECT * FROM unnest(CAST(:seqs AS bigint[]), CAST(:times AS float8[]), "
            "CAST(:tenants AS varchar[]), CAST(:actors AS varchar[]), "
            "CAST(:actions AS varchar[]), CAST(:outcomes AS varchar[]), "
            "CAST(:data AS bytea[]), CAST(:leaves AS bytea[]))"
        ),
        "insert_nodes": (
            "INSERT INTO audit_nodes (level, idx, hash) SELECT * FROM unnest("
            "CAST(:levels AS integer[]), CAST(:indexes AS bigint[]), CAST(:hashes AS bytea[]))"
        ),
        "latest_checkpoint": "SELECT max(tree_size) FROM audit_checkpoints",
        "insert_checkpoint": (
            "INSERT INTO audit_checkpoints (tree_size, root_hash, created_at, note) "
            "VALUES (:size, :root, :now, :note)"
        ),
        "advance_horizon": "UPDATE audit_prune_horizon SET horizon = :before WHERE id = 1",
        "prune": "DELETE FROM audit_records WHERE seq < :before",
        "scan": (
            "SELECT seq, data, leaf FROM audit_records WHERE seq > :after ORDER BY seq LIMIT :limit"
        ),
        "leaf": "SELECT hash FROM audit_nodes WHERE level = 0 AND idx = :seq",
        "checkpoints": "SELECT note FROM audit_checkpoints ORDER BY tree_size",
    }.items()
}


def _record(row: Any) -> AuditRecord:
    seq, at, data, leaf = row
    _, _, entry, prev = audit.parse_data(bytes(data))
    return AuditRecord(seq, at, entry, prev, bytes(data), bytes(leaf))


def _wanted(work: Callable[[merkle.GetNode], object]) -> list[tuple[int, int]]:
    """The nodes ``work`` asks for: which ones depends on sizes and indexes, never on hashes."""
    asked: list[tuple[int, int]] = []

    def record(level: int, index: int) -> bytes:
        asked.append((level, index))
        return bytes(merkle.HASH_SIZE)

    work(record)
    return asked


async def _with_nodes(connection: AsyncConnection, work: Callable[[merkle.GetNode], T]) -> T:
    """Run ``work`` on stored nodes, fetched together in one query (rule 5)."""
    wanted = _wanted(work)
    nodes: dict[tuple[int, int], bytes] = {}
    if wanted:
        rows = await connection.execute(
            _SQL["nodes"],
            {"levels": [level for level, _ in wanted], "indexes": [index for _, index in wanted]},
        )
        nodes = {(int(level), int(index)): bytes(value) for level, index, value in rows}

    def get(level: int, index: int) -> bytes:
        try:
            return nodes[(level, index)]
        except KeyError:
            raise LookupError(f"no audit node at level {level}, index {index}") from None

    return work(get)


def _columns(records: Iterable[AuditRecord]) -> dict[str, list[Any]]:
    columns: dict[str, list[Any]] = {
        name: [] for name in ("seqs", "times", "tenants", "actors", "actions", "outcomes", "data",
                              "leaves")
    }  # fmt: skip
    for record in records:
        entry = record.entry
        for name, value in zip(
            columns,
            (record.seq, record.time, entry.tenant, entry.actor, entry.action, entry.outcome,
             record.data, record.leaf),
            strict=True,
        ):  # fmt: skip
            columns[name].append(value)
    return columns


class PostgresAuditLog(AuditLog):
    """``AuditLog`` on PostgreSQL; records are published on the event log's ``payments.audit``."""

    def __init__(
        self,
        engine: AsyncEngine,
        log: PostgresEventLog,
        *,
        max_queued_weight: int,
        clock: Clock | None = None,
        max_batch_weight: int = MAX_BATCH_WEIGHT,
    ) -> None:
        self._engine = engine
        self._log = log
        self._clock = clock or SystemClock()
        self._edge: _Edge | None = None
        self._writer: GroupCommit[Sequence[AuditEntry], list[AuditRecord]] = GroupCommit(
            self._commit,
            max_queued_weight=max_queued_weight,
            max_batch_weight=max_batch_weight,
            what="audit log",
        )

    # -- writes: one transaction at a time, across every gateway (rule 1) -------------

    async def _lock(self, connection: AsyncConnection) -> tuple[int, merkle.CompactRange, bytes]:
        """Lock the log; returns the horizon, a copy of the tree's edge and the last leaf."""
        horizon = int((await connection.execute(_SQL["lock"])).scalar_one())
        highest = (await connection.execute(_SQL["highest"])).scalar()
        size = max(horizon, -1 if highest is None else int(highest) + 1)
        if self._edge is not None and self._edge[0].size == size:
            tree, prev = self._edge
            return horizon, tree.copy(), prev

        def rebuild(get: merkle.GetNode) -> tuple[merkle.CompactRange, bytes]:
            tree = merkle.CompactRange.from_nodes(size, get)
            return tree, get(0, size - 1) if size else audit.GENESIS_PREV

        tree, prev = await _with_nodes(connection, rebuild)
        return horizon, tree, prev

    async def _locked(self, work: _Work[T]) -> T:
        """Run ``work`` under the lock; its edge is cached only once COMMIT returned (rule 3)."""
        async with translate_errors(), self._engine.begin() as connection:
            horizon, tree, prev = await self._lock(connection)
            result, edge = await work(connection, horizon, tree, prev)
        self._edge = edge
        return result

    async def _commit(
        self, payloads: list[Sequence[AuditEntry]]
    ) -> list[list[AuditRecord] | Exception]:
        try:
            return list(await self._append(payloads))
        except Exception as exc:
            if len(payloads) == 1 or not retry_alone(exc):
                return [exc] * len(payloads)
        outcomes: list[list[AuditRecord] | Exception] = []
        for entries in payloads:
            try:
                outcomes.extend(await self._append([entries]))
            except Exception as exc:
                outcomes.append(exc)
        return outcomes

    async def _append(self, payloads: list[Sequence[AuditEntry]]) -> list[list[AuditRecord]]:
        now = self._clock.now()
        await self._log.ensure_topics([AUDIT])
        return await self._locked(
            lambda connection, _, tree, prev: self._append_in(connection, tree, prev, payloads, now)
        )

    async def _append_in(
        self,
        connection: AsyncConnection,
        tree: merkle.CompactRange,
        prev: bytes,
        payloads: list[Sequence[AuditEntry]],
        now: float,
    ) -> tuple[list[list[AuditRecord]], _Edge]:
        batches: list[list[AuditRecord]] = []
        nodes: list[tuple[int, int, bytes]] = []
        for entries in payloads:
            batches.append([])
            for entry in entries:
                record = audit.build(tree.size, now, entry, prev)
                tree.append(record.leaf, visit=lambda *node: nodes.append(node))
                prev = record.leaf
                batches[-1].append(record)
        records = [record for batch in batches for record in batch]
        if records:
            await connection.execute(_SQL["insert_records"], _columns(records))
            await connection.execute(
                _SQL["insert_nodes"],
                {
                    "levels": [level for level, _, _ in nodes],
                    "indexes": [index for _, index, _ in nodes],
                    "hashes": [value for _, _, value in nodes],
                },
            )
            published = [
                NewRecord(
                    r.entry.tenant or PLATFORM_TENANT, f"audit:{r.seq}", r.entry.action, r.data
                )
                for r in records
            ]
            await append_in(connection, [(AUDIT, published, now)])
        return batches, (tree, prev)

    async def append(self, entries: Sequence[AuditEntry]) -> list[AuditRecord]:
        if not entries:
            return []
        return await self._writer.submit(entries, weight=len(entries))

    async def checkpoint(
        self, sign: Callable[[Checkpoint], SignedCheckpoint], origin: str, now: float
    ) -> SignedCheckpoint | None:
        async def work(
            connection: AsyncConnection, _: int, tree: merkle.CompactRange, prev: bytes
        ) -> tuple[SignedCheckpoint | None, _Edge]:
            latest = (await connection.execute(_SQL["latest_checkpoint"])).scalar()
            if tree.size == 0 or (latest is not None and latest >= tree.size):
                return None, (tree, prev)
            signed = sign(Checkpoint(origin, tree.size, tree.root(), int(now)))
            await connection.execute(
                _SQL["insert_checkpoint"],
                {
                    "size": tree.size, "root": signed.checkpoint.root_hash, "now": now,
                    "note": signed.text(),
                },
            )  # fmt: skip
            return signed, (tree, prev)

        return await self._locked(work)

    async def prune(self, before: int) -> int:
        async def work(
            connection: AsyncConnection, horizon: int, tree: merkle.CompactRange, prev: bytes
        ) -> tuple[int, _Edge]:
            latest = (await connection.execute(_SQL["latest_checkpoint"])).scalar() or 0
            if before > latest:
                raise Conflict("Records can be pruned only up to the newest signed checkpoint.")
            if before <= horizon:
                return 0, (tree, prev)
            await connection.execute(_SQL["advance_horizon"], {"before": before})
            pruned = (await connection.execute(_SQL["prune"], {"before": before})).rowcount
            return int(pruned), (tree, prev)

        return await self._locked(work)

    # -- reads ----------------------------------------------------------------------

    async def _read(self, work: Callable[[AsyncConnection], Any]) -> Any:
        async with translate_errors(), self._engine.connect() as connection:
            return await work(connection)

    async def query(self, query: AuditQuery) -> list[AuditRecord]:
        clauses = ["seq > :after"]
        parameters: dict[str, object] = {
            "after": -1 if query.after is None else query.after,
            "limit": query.limit,
        }
        for column, value in (
            ("tenant", query.tenant),
            ("actor", query.actor),
            ("action", query.action),
        ):
            if value is not None:
                clauses.append(f"{column} = :{column}")
                parameters[column] = value
        if query.since is not None:
            clauses.append("time >= :since")
            parameters["since"] = query.since
        if query.until is not None:
            clauses.append("time < :until")
            parameters["until"] = query.until
        statement = text(
            f"SELECT seq, time, data, leaf FROM audit_records WHERE {' AND '.join(clauses)} "
            "ORDER BY seq LIMIT :limit"
        )

        async def work(connection: AsyncConnection) -> list[AuditRecord]:
            return [_record(row) for row in await connection.execute(statement, parameters)]

        result: list[AuditRecord] = await self._read(work)
        return result

    async def scan(self, after: int | None, limit: int) -> list[StoredRow]:
        parameters = {"after": -1 if after is None else after, "limit": limit}

        async def work(connection: AsyncConnection) -> list[StoredRow]:
            rows = await connection.execute(_SQL["scan"], parameters)
            return [StoredRow(int(seq), bytes(data), bytes(leaf)) for seq, data, leaf in rows]

        result: list[StoredRow] = await self._read(work)
        return result

    @staticmethod
    async def _size(connection: AsyncConnection) -> int:
        horizon = int((await connection.execute(_SQL["horizon"])).scalar_one())
        highest = (await connection.execute(_SQL["highest"])).scalar()
        return max(horizon, -1 if highest is None else int(highest) + 1)

    async def size(self) -> int:
        result: int = await self._read(self._size)
        return result

    async def _proof(self, work: Callable[[merkle.GetNode], T], tree_size: int) -> T:
        async def read(connection: AsyncConnection) -> T:
            if not 0 < tree_size <= await self._size(connection):
                # The size is not named: it would tell any tenant how busy the install is.
                raise NotFound("The audit log has no tree of that size.")
            return await _with_nodes(connection, work)

        result: T = await self._read(read)
        return result

    async def root(self, tree_size: int) -> bytes:
        return await self._proof(lambda get: merkle.root_from_nodes(tree_size, get), tree_size)

    async def leaf(self, seq: int) -> bytes:
        async def work(connection: AsyncConnection) -> bytes | None:
            value = (await connection.execute(_SQL["leaf"], {"seq": seq})).scalar()
            return None if value is None else bytes(value)

        value: bytes | None = await self._read(work)
        if value is None:
            raise NotFound("There is no audit record with that sequence number.")
        return value

    async def inclusion_proof(self, seq: int, tree_size: int) -> list[bytes]:
        if not 0 <= seq < tree_size:
            raise NotFound("The record is not in a tree of that size.")
        return await self._proof(lambda get: merkle.inclusion_proof(seq, tree_size, get), tree_size)

    async def consistency_proof(self, first: int, second: int) -> list[bytes]:
        if not 0 < first <= second:
            raise NotFound("Consistency proofs need 0 < first <= second.")
        return await self._proof(lambda get: merkle.consistency_proof(first, second, get), second)

    async def checkpoints(self) -> list[SignedCheckpoint]:
        async def work(connection: AsyncConnection) -> list[SignedCheckpoint]:
            return [parse(note) for (note,) in await connection.execute(_SQL["checkpoints"])]

        result: list[SignedCheckpoint] = await self._read(work)
        return result

    async def horizon(self) -> PruneHorizon:
        async def work(connection: AsyncConnection) -> PruneHorizon:
            size = int((await connection.execute(_SQL["horizon"])).scalar_one())
            if not size:
                return PruneHorizon(0, audit.GENESIS_PREV)

            def edge(get: merkle.GetNode) -> PruneHorizon:
                hashes = merkle.CompactRange.from_nodes(size, get).hashes
                return PruneHorizon(size, get(0, size - 1), tuple(hashes))

            return await _with_nodes(connection, edge)

        result: PruneHorizon = await self._read(work)
        return result

    async def aclose(self) -> None:
        """Commit what is queued; the engine is disposed by its owner (the store)."""
        await self._writer.aclose()
