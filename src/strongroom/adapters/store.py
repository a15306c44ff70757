"""Opens every adapter the configuration names, as one ``Store``.

Both the server and the CLI go through here, so an operator's command acts on
exactly what the gateway uses. ``STRONGROOM_DATABASE_URL`` chooses the
database: unset or ``sqlite:///PATH`` is one SQLite file (the event log and
audit log on its group-commit writer thread); ``postgresql://USER@HOST:PORT/DB``
is a PostgreSQL database that several gateways share (needs the ``postgres``
extra). The repositories are the same SQLAlchemy Core code on both.
``STRONGROOM_STREAM_URL`` moves the event stream to Redis Streams or Kafka
(``adapters.streams``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine

from strongroom.adapters.sql.data_keys import SqlDataKeyRepository
from strongroom.adapters.sql.engine import async_url, create_engine, ensure_schema, sqlite_url
from strongroom.adapters.sql.keys import SqlApiKeyRepository
from strongroom.adapters.sql.risk import SqlPolicyStore, open_decision_store
from strongroom.adapters.sql.tenant_secrets import (
    SqlTenantSecretRepository,
    SqlTenantSettingsRepository,
)
from strongroom.adapters.sql.tenants import SqlTenantRepository
from strongroom.adapters.sql.tokens import SqlTokenRepository
from strongroom.adapters.sql.usage import SqlUsageRepository
from strongroom.config import Settings
from strongroom.crypto.keyed_hash import create_private_file
from strongroom.ports import AuditLog, Clock, EventLog
from strongroom.services.risk_stores import DecisionJournal

if TYPE_CHECKING:
    from strongroom.adapters.sqlite.database import SqliteDatabase
    from strongroom.adapters.sqlite.record_index import IndexStart


@dataclass(slots=True)
class Store:
    engine: AsyncEngine
    tenants: SqlTenantRepository
    keys: SqlApiKeyRepository
    usage: SqlUsageRepository
    data_keys: SqlDataKeyRepository
    tokens: SqlTokenRepository
    secrets: SqlTenantSecretRepository
    tenant_settings: SqlTenantSettingsRepository
    policies: SqlPolicyStore
    decisions: DecisionJournal
    log: EventLog
    audit: AuditLog
    #: Run in order by ``aclose`` before the engine is disposed (flush the logs' writers).
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    #: How the embedded log's idempotency index came up (None on PostgreSQL).
    record_index_start: IndexStart | None = None

    async def aclose(self) -> None:
        """Flush and close the logs, then the engine. Idempotent."""
        closers, self.closers = self.closers, []
        try:
            for close in closers:
                await close()
        finally:
            await self.engine.dispose()


def database_url(settings: Settings) -> str:
    return settings.database_url or sqlite_url(settings.database_path)


def is_sqlite(url: str) -> bool:
    return async_url(url).startswith("sqlite")


def _sqlite_path(settings: Settings) -> Path:
    if settings.database_url is None:
        return settings.database_path
    # sqlite:///relative/path or sqlite:////absolute/path, as SQLAlchemy reads them.
    return Path(settings.database_url.partition(":///")[2])


def engine_for(settings: Settings) -> AsyncEngine:
    """The engine for the configured database.

    Raises:
        ConfigurationError: the URL is neither SQLite nor PostgreSQL, or the
            PostgreSQL driver is not installed.
    """
    url = database_url(settings)
    if not is_sqlite(url):
        return create_engine(url, pool_size=settings.database_pool_size)
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if settings.database_url is None:
        # SQLite gives its -wal and -shm files the database file's mode, so
        # creating it 0600 keeps all three private to the gateway's user.
        create_private_file(settings.database_path, b"")
    return create_engine(url, pool_size=settings.database_pool_size)


def _sqlite_logs(
    settings: Settings, clock: Clock | None
) -> tuple[SqliteDatabase, EventLog, AuditLog]:
    from strongroom.adapters.sqlite.audit import SqliteAuditLog
    from strongroom.adapters.sqlite.database import SqliteDatabase
    from strongroom.adapters.sqlite.log import SqliteEventLog

    database = SqliteDatabase(
        _sqlite_path(settings),
        max_queued_weight=settings.writer_queue_max_events,
        commit_delay=settings.commit_delay_ms / 1000,
    )
    return database, SqliteEventLog(database, clock=clock), SqliteAuditLog(database)


def _postgres_logs(
    settings: Settings, engine: AsyncEngine, clock: Clock | None
) -> tuple[EventLog, AuditLog, list[Callable[[], Awaitable[None]]]]:
    from strongroom.adapters.postgres import PostgresAuditLog, PostgresEventLog

    bound = settings.writer_queue_max_events
    log = PostgresEventLog(engine, max_queued_weight=bound, clock=clock)
    audit = PostgresAuditLog(engine, log, max_queued_weight=bound, clock=clock)
    # The audit log publishes through the event log's tables: it closes first.
    return log, audit, [audit.aclose, log.aclose]


async def open_store(
    settings: Settings, *, migrate: bool = False, clock: Clock | None = None
) -> Store:
    """Connect, check (or create) the schema, and open the logs (on ``clock``, for tests).

    Raises:
        SchemaOutOfDate: the database is behind and ``migrate`` is false.
        StorageUnavailable: the database cannot be reached.
        ConfigurationError: the URL or the driver is wrong.
    """
    engine = engine_for(settings)
    database: SqliteDatabase | None = None
    try:
        await ensure_schema(engine, migrate=migrate)
        if engine.dialect.name == "postgresql":
            log, audit, closers = _postgres_logs(settings, engine, clock)
        else:
            database, log, audit = _sqlite_logs(settings, clock)
            closers = [database.aclose]
        database_log = log
        if settings.stream_url is not None:
            # The stream moves to the broker; the database's own log keeps
            # payments.audit, which the audit log publishes through it.
            from strongroom.adapters.streams import (
                DATABASE_TOPICS,
                TopicRoutedLog,
                open_broker_log,
            )

            try:
                broker = await open_broker_log(settings, engine, clock)
            except BaseException:
                for close_log in closers:
                    await close_log()
                raise
            log = TopicRoutedLog(broker, log, DATABASE_TOPICS)
            closers.insert(0, log.aclose)
    except BaseException:
        await engine.dispose()
        raise
    # Decisions go through the database's group commit (and, with the stream in
    # the database, share its transactions): their store closes before the logs.
    decisions = open_decision_store(
        settings, engine, database=database, database_log=database_log, log=log, clock=clock
    )
    closers.insert(0, decisions.aclose)
    return Store(
        engine=engine,
        tenants=SqlTenantRepository(engine),
        keys=SqlApiKeyRepository(engine),
        usage=SqlUsageRepository(engine),
        data_keys=SqlDataKeyRepository(engine),
        tokens=SqlTokenRepository(engine),
        secrets=SqlTenantSecretRepository(engine),
        tenant_settings=SqlTenantSettingsRepository(engine),
        policies=SqlPolicyStore(
            engine, cache_seconds=settings.risk_policy_cache_seconds, database=database
        ),
        decisions=decisions,
        log=log,
        audit=audit,
        closers=closers,
        record_index_start=None if database is None else database.record_index_start,
    )
