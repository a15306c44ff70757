"""Risk decisions on PostgreSQL, committed in groups (``group_commit.GroupCommit``).

Same table and the same behaviour as the SQLite decision store, for several
gateways sharing one database.

Rules:

1. Concurrent puts of one process share a transaction: one multi-row insert
   (``unnest``), one COMMIT; a put returns only after that COMMIT.
2. With the PostgreSQL event log (``publishes_to``), the decisions' records
   on ``risk.decisions`` are appended in the same transaction (the log's
   ``append_in``, under its per-topic offset lock): both are committed, or
   neither.
3. One decision per (tenant, transaction id) and per (tenant,
   Idempotency-Key): the insert does nothing on a conflict, including with an
   earlier row of the same insert or another gateway's, so the first writer
   wins; the loser reads the winner in that transaction and publishes nothing.
4. A shared transaction that fails on one caller's data or on a deadlock is
   retried caller by caller (``sql.engine.retry_alone``), so only the culprit fails.
5. Prunes and erasures delete in chunks of ``DELETE_CHUNK`` rows, each in a
   transaction of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from strongroom.adapters.group_commit import GroupCommit
from strongroom.adapters.postgres.log import PostgresEventLog, append_in
from strongroom.adapters.sql.engine import retry_alone, translate_errors
from strongroom.adapters.sql.risk import DecisionPut, SqlDecisionJournal, stored_record
from strongroom.domain.risk import DecisionRecord
from strongroom.errors import StorageUnavailable
from strongroom.ports import Clock, NewRecord

#: Decisions per shared transaction.
MAX_BATCH: Final = 512
DELETE_CHUNK: Final = 1000

_SQL: Final[dict[str, TextClause]] = {
    name: text(statement)
    for name, statement in {
        "insert": (
            "INSERT INTO risk_decisions "
            "(trace_id, tenant, transaction_id, idempotency_key, record, created_at) "
            "SELECT * FROM unnest(CAST(:trace_ids AS varchar[]), CAST(:tenants AS varchar[]), "
            "CAST(:transaction_ids AS varchar[]), CAST(:keys AS varchar[]), "
            "CAST(:records AS text[]), CAST(:times AS float8[])) "
            "ON CONFLICT DO NOTHING RETURNING trace_id"
        ),
        "find": (
            "SELECT idempotency_key, record FROM risk_decisions WHERE tenant = :tenant "
            "AND (transaction_id = :transaction_id OR idempotency_key = :key) LIMIT 2"
        ),
        "get": "SELECT record FROM risk_decisions WHERE trace_id = :trace_id AND tenant = :tenant",
        # Distinct tenants by skipping through the (tenant, created_at) index.
        "tenants": (
            "WITH RECURSIVE t(tenant) AS (SELECT min(tenant) FROM risk_decisions UNION ALL "
            "SELECT (SELECT min(tenant) FROM risk_decisions WHERE tenant > t.tenant) "
            "FROM t WHERE t.tenant IS NOT NULL) SELECT tenant FROM t WHERE tenant IS NOT NULL"
        ),
        "prune": (
            "DELETE FROM risk_decisions WHERE trace_id IN (SELECT trace_id FROM risk_decisions "
            "WHERE tenant = :tenant AND created_at < :before LIMIT :chunk)"
        ),
        "erase": (
            "DELETE FROM risk_decisions WHERE trace_id IN (SELECT trace_id FROM risk_decisions "
            "WHERE tenant = :tenant LIMIT :chunk)"
        ),
    }.items()
}


async def _winner(
    connection: AsyncConnection, tenant: str, transaction_id: str, key: str | None
) -> str | None:
    parameters = {"tenant": tenant, "transaction_id": transaction_id, "key": key}
    rows = (await connection.execute(_SQL["find"], parameters)).all()
    if not rows:
        return None
    # The Idempotency-Key wins over the transaction id, as in every decision store.
    keyed = [row for row in rows if key is not None and row[0] == key]
    document: str = (keyed or rows)[0][1]
    return document


class PostgresDecisionStore(SqlDecisionJournal[PostgresEventLog]):
    """``DecisionJournal`` in the gateways' PostgreSQL database (module rules)."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        max_queued_weight: int,
        log: PostgresEventLog | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(log, clock)
        self._engine = engine
        self._writer: GroupCommit[DecisionPut, str | None] = GroupCommit(
            self._commit,
            max_queued_weight=max_queued_weight,
            max_batch_weight=MAX_BATCH,
            what="decision store",
        )

    async def _commit(self, puts: list[DecisionPut]) -> list[str | Exception | None]:
        try:
            return list(await self._write(puts))
        except Exception as exc:
            if len(puts) == 1 or not retry_alone(exc):
                return [exc] * len(puts)
        outcomes: list[str | Exception | None] = []
        for put in puts:
            try:
                (outcome,) = await self._write([put])
            except Exception as exc:
                outcomes.append(exc)
            else:
                outcomes.append(outcome)
        return outcomes

    async def _write(self, puts: Sequence[DecisionPut]) -> list[str | None]:
        topics = {put.published[0] for put in puts if put.published is not None}
        if topics and self._log is not None:
            await self._log.ensure_topics(topics)
        async with translate_errors(), self._engine.begin() as connection:
            inserted = {
                row[0]
                for row in await connection.execute(
                    _SQL["insert"],
                    {
                        "trace_ids": [put.trace_id for put in puts],
                        "tenants": [put.tenant for put in puts],
                        "transaction_ids": [put.transaction_id for put in puts],
                        "keys": [put.idempotency_key for put in puts],
                        "records": [put.document for put in puts],
                        "times": [put.created_at for put in puts],
                    },
                )
            }
            results: list[str | None] = []
            published: dict[str, list[NewRecord]] = {}
            now = 0.0
            for put in puts:
                if put.trace_id in inserted:
                    results.append(None)
                    if put.published is not None:
                        topic, record = put.published
                        published.setdefault(topic, []).append(record)
                        now = max(now, put.created_at)
                    continue
                winner = await _winner(
                    connection, put.tenant, put.transaction_id, put.idempotency_key
                )
                if winner is None:
                    # Only a trace id already taken gets here; a retry draws a new one.
                    raise StorageUnavailable("The decision could not be stored; retry.")
                results.append(winner)
            if published:
                await append_in(
                    connection, [(topic, records, now) for topic, records in published.items()]
                )
        return results

    async def _submit(self, put: DecisionPut) -> str | None:
        return await self._writer.submit(put)

    async def get(self, tenant: str, trace_id: str) -> DecisionRecord | None:
        async with translate_errors(), self._engine.connect() as connection:
            row = (
                await connection.execute(_SQL["get"], {"trace_id": trace_id, "tenant": tenant})
            ).first()
        return None if row is None else stored_record(row[0])

    async def find(
        self, tenant: str, *, transaction_id: str, idempotency_key: str | None
    ) -> DecisionRecord | None:
        async with translate_errors(), self._engine.connect() as connection:
            document = await _winner(connection, tenant, transaction_id, idempotency_key)
        return None if document is None else stored_record(document)

    async def _delete(self, statement: str, tenant: str, **parameters: object) -> int:
        deleted = 0
        while True:
            async with translate_errors(), self._engine.begin() as connection:
                result = await connection.execute(
                    _SQL[statement], {"tenant": tenant, "chunk": DELETE_CHUNK, **parameters}
                )
            deleted += result.rowcount
            if result.rowcount < DELETE_CHUNK:
                return deleted

    async def prune(self, before: float) -> int:
        async with translate_errors(), self._engine.connect() as connection:
            tenants = [row[0] for row in await connection.execute(_SQL["tenants"])]
        deleted = 0
        for tenant in tenants:
            deleted += await self._delete("prune", tenant, before=before)
        return deleted

    async def erase_tenant(self, tenant: str) -> int:
        return await self._delete("erase", tenant)

    async def aclose(self) -> None:
        await self._writer.aclose()
