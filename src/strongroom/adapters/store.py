"""Opens every adapter the configuration names, as one ``Store``.

Both the server and the CLI go through here, so an operator's command acts on
exactly what the gateway uses.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from strongroom.adapters.sql.data_keys import SqlDataKeyRepository
from strongroom.adapters.sql.engine import create_engine, ensure_schema, sqlite_url
from strongroom.adapters.sql.keys import SqlApiKeyRepository
from strongroom.adapters.sql.tenant_secrets import (
    SqlTenantSecretRepository,
    SqlTenantSettingsRepository,
)
from strongroom.adapters.sql.tenants import SqlTenantRepository
from strongroom.adapters.sql.tokens import SqlTokenRepository
from strongroom.adapters.sql.usage import SqlUsageRepository
from strongroom.adapters.sqlite.audit import SqliteAuditLog
from strongroom.adapters.sqlite.database import SqliteDatabase
from strongroom.adapters.sqlite.log import SqliteEventLog
from strongroom.config import Settings
from strongroom.crypto.keyed_hash import create_private_file
from strongroom.errors import ConfigurationError
from strongroom.ports import AuditLog, EventLog


@dataclass(slots=True)
class Store:
    engine: AsyncEngine
    database: SqliteDatabase
    tenants: SqlTenantRepository
    keys: SqlApiKeyRepository
    usage: SqlUsageRepository
    data_keys: SqlDataKeyRepository
    tokens: SqlTokenRepository
    secrets: SqlTenantSecretRepository
    tenant_settings: SqlTenantSettingsRepository
    log: EventLog
    audit: AuditLog

    async def aclose(self) -> None:
        await self.database.aclose()
        await self.engine.dispose()


def database_url(settings: Settings) -> str:
    return settings.database_url or sqlite_url(settings.database_path)


def engine_for(settings: Settings) -> AsyncEngine:
    url = database_url(settings)
    if not url.startswith("sqlite"):
        raise ConfigurationError(
            "STRONGROOM_DATABASE_URL: only SQLite is supported by this release"
        )
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if settings.database_url is None:
        # SQLite gives its -wal and -shm files the database file's mode, so
        # creating it 0600 keeps all three private to the gateway's user.
        create_private_file(settings.database_path, b"")
    return create_engine(url)


async def open_store(settings: Settings, *, migrate: bool = False) -> Store:
    """Connect, check (or create) the schema, and open the logs.

    Raises:
        SchemaOutOfDate: the database is behind and ``migrate`` is false.
        StorageUnavailable: the database cannot be reached.
    """
    engine = engine_for(settings)
    try:
        await ensure_schema(engine, migrate=migrate)
        database = SqliteDatabase(
            settings.database_path, max_queued_weight=settings.writer_queue_max_events
        )
    except BaseException:
        await engine.dispose()
        raise
    return Store(
        engine=engine,
        database=database,
        tenants=SqlTenantRepository(engine),
        keys=SqlApiKeyRepository(engine),
        usage=SqlUsageRepository(engine),
        data_keys=SqlDataKeyRepository(engine),
        tokens=SqlTokenRepository(engine),
        secrets=SqlTenantSecretRepository(engine),
        tenant_settings=SqlTenantSettingsRepository(engine),
        log=SqliteEventLog(database),
        audit=SqliteAuditLog(database),
    )
