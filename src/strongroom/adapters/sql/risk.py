"""Risk policies on SQLAlchemy Core, for SQLite and PostgreSQL, and the decision store.

Decisions are written by a group-committing store of each database
(``adapters.sqlite.decisions``, ``adapters.postgres.decisions``) behind a
cache of recent decisions; ``open_decision_store`` puts them together.

Rules these repositories keep:

1. A tenant's active policy is the version of its newest row in
   ``risk_policy_history``; with none, it is ``DEFAULT_POLICY``.
2. ``get_active`` may answer from a per-process cache for up to
   ``cache_seconds``: a policy applied elsewhere (another gateway, the CLI)
   is in force everywhere within that time. Parsed versions are cached
   without expiry, since a version is its content hash and never changes.
   When the cache runs out, concurrent evaluations share one read; on
   SQLite it is a point query on the database's own read connection, since
   every SQLAlchemy transaction there begins IMMEDIATE and would queue behind
   the group-commit writer.
3. A decision is stored once per (tenant, transaction id) and per (tenant,
   Idempotency-Key): ``INSERT ... ON CONFLICT DO NOTHING`` lets the first
   writer win, whichever gateway it ran on, and the loser reads the winner.
4. Erasing a tenant deletes its versions and history and drops it from this
   process's caches; another gateway's cache forgets it within
   ``cache_seconds`` (the tenant's keys are gone by then anyway).
"""

from __future__ import annotations

import time
from abc import abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

import orjson
from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from strongroom.adapters.sql.engine import translate_errors
from strongroom.adapters.sql.tables import risk_policies, risk_policy_history
from strongroom.config import Settings
from strongroom.domain.risk import (
    DEFAULT_POLICY,
    AppliedPolicy,
    DecisionRecord,
    Policy,
    validate_policy_text,
)
from strongroom.errors import StrongroomError
from strongroom.observability.logging import get_logger
from strongroom.ports import Clock, EventLog, NewRecord, SystemClock
from strongroom.services.risk_cache import CachedDecisionStore
from strongroom.services.risk_retention import DAY_SECONDS, DecisionPruner
from strongroom.services.risk_stores import DecisionJournal, ErasablePolicyStore
from strongroom.services.single_flight import SingleFlight

if TYPE_CHECKING:
    from strongroom.adapters.sqlite.database import SqliteDatabase

DEFAULT_POLICY_CACHE_SECONDS: Final = 1.0
#: Parsed versions kept in memory; past this the cache starts over.
MAX_CACHED_VERSIONS: Final = 10_000


#: ``get_active`` on SQLite: the tenant's newest application, by its (tenant, id) index.
_ACTIVE: Final = (
    "SELECT h.version, p.text FROM risk_policy_history AS h JOIN risk_policies AS p "
    "ON p.tenant = h.tenant AND p.version = h.version WHERE h.tenant = ? "
    "ORDER BY h.id DESC LIMIT 1"
)


def _insert(engine: AsyncEngine) -> Any:
    return postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert


class SqlPolicyStore(ErasablePolicyStore):
    """``PolicyStore`` in the gateway's database, shared by every gateway and the CLI."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        cache_seconds: float = DEFAULT_POLICY_CACHE_SECONDS,
        database: SqliteDatabase | None = None,
    ) -> None:
        if cache_seconds < 0:
            raise ValueError("cache_seconds must not be negative")
        self._engine = engine
        self._database = database
        self._insert = _insert(engine)
        self._cache_seconds = cache_seconds
        self._parsed: dict[tuple[str, str], Policy] = {}
        self._active: dict[str, tuple[Policy, float]] = {}
        self._loading: SingleFlight[str, tuple[str, str] | None] = SingleFlight()

    def _parse(self, tenant: str, version: str, text: str) -> Policy:
        found = self._parsed.get((tenant, version))
        if found is None:
            if len(self._parsed) >= MAX_CACHED_VERSIONS:
                self._parsed.clear()
            found = self._parsed[(tenant, version)] = validate_policy_text(text)
        return found

    async def get_active(self, tenant: str) -> Policy:
        cached = self._active.get(tenant)
        clock = time.monotonic()
        if cached is not None and clock - cached[1] < self._cache_seconds:
            return cached[0]
        if self._database is not None:
            row = self._database.read_sync(
                lambda connection: connection.execute(_ACTIVE, (tenant,)).fetchone()
            )
        else:
            row = await self._loading.run(tenant, lambda: self._read_active(tenant))
        policy = DEFAULT_POLICY if row is None else self._parse(tenant, row[0], row[1])
        if len(self._active) >= MAX_CACHED_VERSIONS:
            self._active.clear()
        self._active[tenant] = (policy, clock)
        return policy

    async def _read_active(self, tenant: str) -> tuple[str, str] | None:
        query = (
            select(risk_policy_history.c.version, risk_policies.c.text)
            .join(
                risk_policies,
                (risk_policies.c.tenant == risk_policy_history.c.tenant)
                & (risk_policies.c.version == risk_policy_history.c.version),
            )
            .where(risk_policy_history.c.tenant == tenant)
            .order_by(risk_policy_history.c.id.desc())
            .limit(1)
        )
        async with translate_errors(), self._engine.connect() as connection:
            row = (await connection.execute(query)).first()
        return None if row is None else (row.version, row.text)

    async def apply(self, tenant: str, text: str, actor: str, now: float) -> AppliedPolicy:
        policy = validate_policy_text(text)
        version = policy.version
        keep = self._insert(risk_policies).values(
            tenant=tenant, version=version, text=text, created_at=now
        )
        keep = keep.on_conflict_do_nothing(index_elements=["tenant", "version"])
        record = risk_policy_history.insert().values(
            tenant=tenant, version=version, actor=actor[:128], applied_at=now
        )
        async with translate_errors(), self._engine.begin() as connection:
            await connection.execute(keep)
            await connection.execute(record)
        self._parsed.setdefault((tenant, version), policy)
        self._active[tenant] = (policy, time.monotonic())
        return AppliedPolicy(tenant, version, text, actor, now, policy)

    async def get(self, tenant: str, version: str) -> Policy | None:
        if version == DEFAULT_POLICY.version:
            return DEFAULT_POLICY
        found = self._parsed.get((tenant, version))
        if found is not None:
            return found
        query = (
            select(risk_policies.c.text)
            .where(risk_policies.c.tenant == tenant)
            .where(risk_policies.c.version == version)
        )
        async with translate_errors(), self._engine.connect() as connection:
            row = (await connection.execute(query)).first()
        return None if row is None else self._parse(tenant, version, row.text)

    async def history(self, tenant: str) -> list[AppliedPolicy]:
        query = (
            select(
                risk_policy_history.c.version,
                risk_policy_history.c.actor,
                risk_policy_history.c.applied_at,
                risk_policies.c.text,
            )
            .join(
                risk_policies,
                (risk_policies.c.tenant == risk_policy_history.c.tenant)
                & (risk_policies.c.version == risk_policy_history.c.version),
            )
            .where(risk_policy_history.c.tenant == tenant)
            .order_by(risk_policy_history.c.id)
        )
        async with translate_errors(), self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [
            AppliedPolicy(
                tenant,
                row.version,
                row.text,
                row.actor,
                row.applied_at,
                self._parse(tenant, row.version, row.text),
            )
            for row in rows
        ]

    async def erase_tenant(self, tenant: str) -> int:
        async with translate_errors(), self._engine.begin() as connection:
            await connection.execute(
                delete(risk_policy_history).where(risk_policy_history.c.tenant == tenant)
            )
            result = await connection.execute(
                delete(risk_policies).where(risk_policies.c.tenant == tenant)
            )
        self._active.pop(tenant, None)
        for key in [key for key in self._parsed if key[0] == tenant]:
            del self._parsed[key]
        erased: int = result.rowcount
        return erased


def storage_document(record: DecisionRecord) -> str:
    """The stored JSON of a decision (what ``DecisionRecord.from_storage`` reads)."""
    return orjson.dumps(record.to_storage()).decode()


def stored_record(document: str | bytes) -> DecisionRecord:
    return DecisionRecord.from_storage(orjson.loads(document))


DatabaseLog = TypeVar("DatabaseLog", bound=EventLog)


@dataclass(frozen=True, slots=True)
class DecisionPut:
    """One decision on its way into a journal, with the stream record to publish with it."""

    tenant: str
    trace_id: str
    transaction_id: str
    idempotency_key: str | None
    document: str
    created_at: float
    published: tuple[str, NewRecord] | None


class SqlDecisionJournal(DecisionJournal, Generic[DatabaseLog]):
    """What the SQLite and PostgreSQL journals share: a decision becomes a
    ``DecisionPut`` and, when the journal was opened with the database's own
    event log (of type ``DatabaseLog``), its stream record rides in the same commit."""

    def __init__(self, log: DatabaseLog | None, clock: Clock | None) -> None:
        self._log = log
        self._clock = clock or SystemClock()

    def publishes_to(self, log: EventLog | None) -> bool:
        return log is not None and log is self._log

    @abstractmethod
    async def _submit(self, put: DecisionPut) -> str | None:
        """Commit ``put``; the stored document of an earlier decision for the same
        transaction or Idempotency-Key (the winner), or None when ``put`` won."""

    async def _put(
        self,
        record: DecisionRecord,
        published: tuple[str, NewRecord] | None,
        document: bytes | None = None,
    ) -> DecisionRecord:
        put = DecisionPut(
            record.tenant, record.trace_id, record.transaction_id, record.idempotency_key,
            document.decode() if document else storage_document(record), self._clock.now(),
            published,
        )  # fmt: skip
        winner = await self._submit(put)
        return record if winner is None else stored_record(winner)

    async def put(self, record: DecisionRecord) -> DecisionRecord:
        return await self._put(record, None)

    async def put_published(
        self,
        record: DecisionRecord,
        topic: str,
        published: NewRecord,
        *,
        document: bytes | None = None,
    ) -> DecisionRecord:
        if self._log is None:
            raise NotImplementedError("this decision store was opened without the event log")
        return await self._put(record, (topic, published), document)


def open_decision_store(
    settings: Settings,
    engine: AsyncEngine,
    *,
    database: SqliteDatabase | None,
    database_log: EventLog,
    log: EventLog,
    clock: Clock | None = None,
) -> DecisionJournal:
    """The gateway's decision store: the database's group-committing store behind a
    cache of recent decisions, pruned in the background past the retention.

    ``database_log`` is the database's own event log; when ``log`` (the stream)
    is that log, decisions and their stream records share a transaction.
    Otherwise (the stream on a broker) decisions are group-committed on their
    own and the service appends them to ``log`` after.
    """
    clock = clock or SystemClock()
    store: DecisionJournal
    if engine.dialect.name == "postgresql":
        from strongroom.adapters.postgres.decisions import PostgresDecisionStore
        from strongroom.adapters.postgres.log import PostgresEventLog

        store = PostgresDecisionStore(
            engine,
            max_queued_weight=settings.writer_queue_max_events,
            log=database_log if isinstance(database_log, PostgresEventLog) else None,
            clock=clock,
        )
    else:
        from strongroom.adapters.sqlite.decisions import SqliteDecisionStore
        from strongroom.adapters.sqlite.log import SqliteEventLog

        if database is None:
            raise ValueError("a SQLite decision store needs the SQLite database")
        store = SqliteDecisionStore(
            database,
            log=database_log if isinstance(database_log, SqliteEventLog) else None,
            clock=clock,
        )
    pruner = DecisionPruner(
        store,
        clock,
        retention_seconds=settings.risk_decision_retention_days * DAY_SECONDS,
        on_failure=_log_prune_failure,
    )
    pruner.start()
    return CachedDecisionStore(store, on_close=pruner.aclose)


def _log_prune_failure(error: StrongroomError) -> None:
    get_logger("strongroom").warning("risk_decisions_prune_failed", error=error.code)
