"""Opens every adapter the configuration names, as one ``Store``.

Both the server and the CLI go through here, so an operator's command acts on
exactly what the gateway uses.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from strongroom.adapters.sql.engine import create_engine, ensure_schema, sqlite_url
from strongroom.adapters.sql.keys import SqlApiKeyRepository
from strongroom.adapters.sql.tenants import SqlTenantRepository
from strongroom.adapters.sql.usage import SqlUsageRepository
from strongroom.adapters.sqlite.log import SqliteEventLog
from strongroom.config import Settings
from strongroom.errors import ConfigurationError
from strongroom.ports import EventLog


@dataclass(slots=True)
class Store:
    engine: AsyncEngine
    tenants: SqlTenantRepository
    keys: SqlApiKeyRepository
    usage: SqlUsageRepository
    log: EventLog

    async def aclose(self) -> None:
        await self.log.aclose()
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
    return create_engine(url)


async def open_store(settings: Settings, *, migrate: bool = False) -> Store:
    """Connect, check (or create) the schema, and open the event log.

    Raises:
        SchemaOutOfDate: the database is behind and ``migrate`` is false.
        StorageUnavailable: the database cannot be reached.
    """
    engine = engine_for(settings)
    try:
        await ensure_schema(engine, migrate=migrate)
        log = SqliteEventLog(
            settings.database_path, max_queued_events=settings.writer_queue_max_events
        )
    except BaseException:
        await engine.dispose()
        raise
    return Store(
        engine=engine,
        tenants=SqlTenantRepository(engine),
        keys=SqlApiKeyRepository(engine),
        usage=SqlUsageRepository(engine),
        log=log,
    )
