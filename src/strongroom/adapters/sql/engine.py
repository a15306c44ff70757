"""Engines, schema migrations and driver-error mapping for the relational store.

``STRONGROOM_DATABASE_URL`` names the database: unset means the SQLite file in
the data dir; ``sqlite:///path`` and ``postgresql://user@host:port/db`` are
accepted and given their async drivers (aiosqlite, asyncpg).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event, inspect, text
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from strongroom.adapters.sqlite.connection import apply_pragmas
from strongroom.errors import ConfigurationError, StorageUnavailable

MIGRATIONS: Final = Path(__file__).parent / "migrations"
_DRIVERS: Final = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}


def async_url(url: str) -> str:
    """The URL with its async driver.

    Raises:
        ConfigurationError: the scheme is not SQLite or PostgreSQL.
    """
    scheme, separator, rest = url.partition("://")
    if not separator or scheme not in _DRIVERS:
        raise ConfigurationError(
            "STRONGROOM_DATABASE_URL: use sqlite:///PATH or postgresql://USER@HOST:PORT/DB"
        )
    return f"{_DRIVERS[scheme]}://{rest}"


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


#: Seconds to open a PostgreSQL connection before the store counts as unavailable.
CONNECT_TIMEOUT_SECONDS: Final = 5.0
#: The advisory lock ``upgrade`` holds on PostgreSQL, so gateways started together
#: with ``--migrate`` run the migrations once, one after the other.
_MIGRATION_LOCK: Final = 0x5354524F4E47  # "STRONG"


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    """An async engine; SQLite connections get WAL, FULL sync and immediate transactions.

    Raises:
        ConfigurationError: the scheme is unknown, or its driver is not installed.
    """
    resolved = async_url(url)
    if resolved.startswith("sqlite"):
        engine = create_async_engine(resolved, connect_args={"timeout": 10})
        _configure_sqlite(engine)
        return engine
    try:
        return create_async_engine(
            resolved,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=True,
            connect_args={"timeout": CONNECT_TIMEOUT_SECONDS},
        )
    except ModuleNotFoundError as exc:
        raise ConfigurationError(
            "STRONGROOM_DATABASE_URL names PostgreSQL, whose driver is not installed; "
            "run: pip install 'strongroom[postgres]'"
        ) from exc


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _: Any) -> None:
        # Manage transactions ourselves: pysqlite's implicit BEGIN is deferred,
        # and a deferred read that later writes can fail at once with
        # SQLITE_BUSY against the event log's writer instead of waiting.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            apply_pragmas(cursor.execute)
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _is_empty(connection: Connection) -> bool:
    return not inspect(connection).get_table_names()


async def current_revision(engine: AsyncEngine) -> str | None:
    async with translate_errors(), engine.connect() as connection:
        return await connection.run_sync(_current)


async def upgrade(engine: AsyncEngine) -> tuple[str | None, str]:
    """Apply every pending migration; returns (revision before, revision after)."""

    def run(connection: Connection) -> tuple[str | None, str]:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        before = _current(connection)
        command.upgrade(_alembic_config(connection), "head")
        return before, head_revision()

    async with translate_errors(), engine.begin() as connection:
        return await connection.run_sync(run)


def history() -> list[tuple[str, str | None, str]]:
    """Every migration as (revision, down revision, message), newest first."""
    scripts = ScriptDirectory.from_config(_alembic_config())
    return [
        (script.revision, _down(script.down_revision), (script.doc or "").strip())
        for script in scripts.walk_revisions()
    ]


def _down(value: object) -> str | None:
    return value if isinstance(value, str) or value is None else ",".join(map(str, value))  # type: ignore[call-overload]


class SchemaOutOfDate(ConfigurationError):
    """Raised when the database is behind this release and was not upgraded."""


async def ensure_schema(engine: AsyncEngine, *, migrate: bool) -> None:
    """Create the schema in an empty database; upgrade an older one only when asked.

    Raises:
        SchemaOutOfDate: the database is behind and ``migrate`` is false; the
            message names the command to run.
    """

    async def state(connection: AsyncConnection) -> tuple[bool, str | None]:
        return await connection.run_sync(lambda c: (_is_empty(c), _current(c)))

    async with translate_errors(), engine.connect() as connection:
        empty, current = await state(connection)
    head = head_revision()
    if current == head:
        return
    if empty or migrate:
        await upgrade(engine)
        return
    known = {revision for revision, _, _ in history()}
    if current is not None and current not in known:
        raise SchemaOutOfDate(
            f"the database is at schema revision {current}, which this release does not know; "
            "upgrade Strongroom"
        )
    raise SchemaOutOfDate(
        f"the database schema is at revision {current or 'none'} but this release needs "
        f"{head}; run 'strongroom db upgrade' (or start with 'serve --migrate')"
    )


def sqlstate(error: BaseException) -> str | None:
    """The SQLSTATE behind a ``StorageUnavailable`` raised by ``translate_errors``, if any.

    Class ``22`` (data exception) and ``23`` (constraint violation) blame the
    statement's data; class ``40`` (deadlock, serialization failure) the timing.
    """
    cause = error.__cause__
    if isinstance(cause, DBAPIError):
        code = getattr(cause.orig, "sqlstate", None)
        return code if isinstance(code, str) else None
    return None


@asynccontextmanager
async def translate_errors() -> AsyncIterator[None]:
    """Map driver errors to ``StorageUnavailable``: the one place that knows drivers."""
    try:
        yield
    except (OperationalError, DBAPIError) as exc:
        raise StorageUnavailable("The store is unavailable.") from exc
    except SQLAlchemyError as exc:
        raise StorageUnavailable("The store failed.") from exc
    except OSError as exc:
        raise StorageUnavailable("The store is unreachable.") from exc


#: SQLSTATE classes that blame one statement's data (22, 23) or the timing (40).
_INDIVIDUAL_FAILURES: Final = ("22", "23", "40")


def retry_alone(error: Exception) -> bool:
    """Whether a shared transaction's failure may belong to one caller only.

    Then each caller is retried in a transaction of its own, so only the
    culprit fails. A lost connection or a failed COMMIT is everyone's failure
    (and a COMMIT that may have happened must not be repeated blindly).
    """
    if not isinstance(error, StorageUnavailable):
        return True
    code = sqlstate(error)
    return code is not None and code.startswith(_INDIVIDUAL_FAILURES)
