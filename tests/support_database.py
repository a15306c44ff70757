"""Throwaway PostgreSQL databases for tests, and the switch that runs a suite on them.

``fresh_database()`` is an async context manager around one new database (for
fixtures). ``database_overrides(data_dir)`` is what ``make_settings`` and the
gateway processes add to their settings: nothing by default, and with
``STRONGROOM_TEST_DATABASE=postgres`` the URL of a database of that data dir
(the same one each time the dir is named, so a restarted gateway finds its
data), created on first use and dropped when the test process exits;
``on_postgres()`` tells a test which way the suite is switched.

Tests that look at the store around the product use ``connect(data_dir)`` (sqlite3
on the SQLite file, or a sqlite3-like connection to the data dir's database),
``copy_data_dir`` (a backup: files and database) and ``database_contents`` (every
stored value, for scans that look for what must never be stored).
``migrate_sqlite(path, revision)`` brings a SQLite file to a schema revision;
``rows_writer(tmp_path, ...)`` is a group-commit writer on a file with one
``rows (name)`` table, for tests of the writer itself.

The server is ``STRONGROOM_TEST_POSTGRES`` (default
``postgresql://postgres@127.0.0.1:5432/test``). When it is unreachable the test
is skipped, naming PostgreSQL, except with ``CI=true``, where it fails.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import re
import shutil
import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

import asyncpg
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine

from strongroom.adapters.sql.engine import _alembic_config
from strongroom.adapters.sqlite.connection import connect as sqlite_connect
from strongroom.adapters.sqlite.writer import GroupCommitWriter

SERVER: Final = os.environ.get(
    "STRONGROOM_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
#: ``STRONGROOM_TEST_DATABASE=postgres`` switches ``make_settings`` and gateway processes.
SWITCH: Final = "STRONGROOM_TEST_DATABASE"

T = TypeVar("T")


def _unreachable(exc: BaseException) -> None:
    """Skip (or in CI fail) the current test: PostgreSQL is not there."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL at {SERVER} is required in CI and is unreachable: {exc}")
    pytest.skip(f"PostgreSQL at {SERVER} is unreachable: {exc}")


async def _admin() -> asyncpg.Connection:
    try:
        return await asyncpg.connect(SERVER, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        _unreachable(exc)
        raise  # pragma: no cover - _unreachable raises


def _url(name: str) -> str:
    return f"{SERVER.rsplit('/', 1)[0]}/{name}"


async def create_database() -> str:
    """A new, empty database; returns its URL."""
    admin = await _admin()
    try:
        name = "strongroom_" + uuid.uuid4().hex[:12]
        await admin.execute(f'CREATE DATABASE "{name}"')
        return _url(name)
    finally:
        await admin.close()


async def drop_databases(urls: list[str]) -> None:
    """Drop databases made by ``create_database``, disconnecting whoever is still on them."""
    if not urls:
        return
    admin = await asyncpg.connect(SERVER, timeout=5)
    try:
        for url in urls:
            name = url.rsplit("/", 1)[1]
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """The URL of a fresh, empty database, dropped afterwards."""
    url = await create_database()
    try:
        yield url
    finally:
        await drop_databases([url])


# -- the suite-wide switch ---------------------------------------------------------

_by_data_dir: dict[Path, str] = {}
_lock = threading.Lock()


def _run(work: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even inside a running event loop."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            outcome.append(asyncio.run(work))
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=target, name="test-database")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]


def _drop_all() -> None:
    with _lock:
        urls = list(_by_data_dir.values())
        _by_data_dir.clear()
    with contextlib.suppress(OSError, asyncpg.PostgresError):
        _run(drop_databases(urls))


def postgres_requested() -> bool:
    return os.environ.get(SWITCH, "").lower() == "postgres"


def database_url_for(data_dir: Path) -> str:
    """The test database of ``data_dir``, created on first use."""
    key = data_dir.resolve()
    with _lock:
        url = _by_data_dir.get(key)
        if url is None:
            if not _by_data_dir:
                atexit.register(_drop_all)
            url = _by_data_dir[key] = _run(create_database())
    return url


def database_overrides(data_dir: Path) -> dict[str, Any]:
    """Settings overrides that put ``data_dir``'s store where the suite is switched to."""
    return {"database_url": database_url_for(data_dir)} if postgres_requested() else {}


def database_env(data_dir: Path) -> dict[str, str]:
    """``database_overrides`` as environment variables, for gateway and CLI processes."""
    return {f"STRONGROOM_{k.upper()}": v for k, v in database_overrides(data_dir).items()}


def on_postgres() -> bool:
    """Whether this run puts every data dir's store on PostgreSQL (for ``skipif``)."""
    return postgres_requested()


def copy_data_dir(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` as a backup would: the files and, on PostgreSQL, the
    database of ``source`` (nobody may be connected to it) as the database of ``target``."""
    shutil.copytree(source, target)
    if postgres_requested():
        url = _run(_clone_database(database_url_for(source)))
        with _lock:
            _by_data_dir[target.resolve()] = url


async def _clone_database(source_url: str) -> str:
    admin = await _admin()
    try:
        name = "strongroom_" + uuid.uuid4().hex[:12]
        template = source_url.rsplit("/", 1)[1]
        # A gateway or CLI that has just closed may still be leaving the source.
        for attempt in range(50):
            try:
                await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
                break
            except asyncpg.ObjectInUseError:
                if attempt == 49:
                    raise
                await asyncio.sleep(0.1)
        return _url(name)
    finally:
        await admin.close()


# -- the database as a DBA (or an attacker) sees it ------------------------------------

#: What a refused statement raises, on either database.
DATABASE_ERRORS: Final = (sqlite3.DatabaseError, asyncpg.PostgresError)
DB_FILE: Final = "strongroom.db"
_PLACEHOLDER: Final = re.compile(r"\?")


class Rows:
    """What ``PostgresConnection.execute`` returns: sqlite3's cursor, as far as tests use it."""

    def __init__(self, rows: list[tuple[Any, ...]], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def fetchall(self) -> list[tuple[Any, ...]]:
        return list(self._rows)

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._rows[0] if self._rows else None

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self._rows)


class PostgresConnection:
    """A synchronous autocommit connection to a test database, used as sqlite3's is:
    ``execute(sql, params)`` with ``?`` placeholders, then ``fetchall``/``fetchone``/
    ``rowcount``. It runs asyncpg on a loop of its own, so async tests may use it too."""

    def __init__(self, url: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="test-database-connection", daemon=True
        )
        self._thread.start()
        try:
            self._connection: asyncpg.Connection = self._call(asyncpg.connect(url, timeout=5))
        except BaseException:
            self._stop()
            raise

    def _call(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()

    async def _execute(self, sql: str, params: Sequence[Any]) -> Rows:
        numbered = iter(range(1, len(params) + 1))
        query = _PLACEHOLDER.sub(lambda _: f"${next(numbered)}", sql)
        statement = await self._connection.prepare(query)
        rows = [tuple(row) for row in await statement.fetch(*params)]
        status = statement.get_statusmsg() or ""
        count = status.rsplit(" ", 1)[-1]
        return Rows(rows, int(count) if count.isdigit() else -1)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        return self._call(self._execute(sql, params))

    def close(self) -> None:
        try:
            self._call(self._connection.close())
        finally:
            self._stop()

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


Connection = sqlite3.Connection | PostgresConnection


def connect(data_dir: Path) -> Connection:
    """A plain connection to ``data_dir``'s store, around the product (autocommit):
    sqlite3 on the SQLite file, or ``PostgresConnection`` on the data dir's database."""
    if postgres_requested():
        return PostgresConnection(database_url_for(data_dir))
    connection = sqlite3.connect(data_dir / DB_FILE, isolation_level=None)
    connection.execute("PRAGMA busy_timeout = 5000")
    return connection


@contextlib.contextmanager
def connected(data_dir: Path) -> Iterator[Connection]:
    """``connect(data_dir)``, closed on leaving."""
    connection = connect(data_dir)
    try:
        yield connection
    finally:
        connection.close()


def database_contents(data_dir: Path) -> dict[str, bytes]:
    """On PostgreSQL, every table of ``data_dir``'s database as raw bytes (values as
    stored, ``bytea`` unescaped, tab-separated, one row a line), keyed ``database:TABLE``,
    for scans that look for what must never be stored; nothing on SQLite, whose file is
    in the data dir and scanned with it."""
    if not postgres_requested():
        return {}
    return _run(_dump(database_url_for(data_dir)))


async def _dump(url: str) -> dict[str, bytes]:
    connection = await asyncpg.connect(url, timeout=5)
    try:
        tables = await connection.fetch(
            "SELECT schemaname, tablename FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
        )
        contents = {}
        for schema, table in tables:
            # The names come from the catalogue, not from a request.
            rows = await connection.fetch(f'SELECT * FROM "{schema}"."{table}"')  # noqa: S608
            contents[f"database:{table}"] = b"\n".join(
                b"\t".join(_raw(value) for value in row.values()) for row in rows
            )
        return contents
    finally:
        await connection.close()


def _raw(value: Any) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return str(value).encode()


def migrate_sqlite(
    path: Path, revision: str = "head", action: Callable[[Config, str], None] = command.upgrade
) -> None:
    """Upgrade (or, with ``command.downgrade``, downgrade) the SQLite file at ``path``."""
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as connection:
            action(_alembic_config(connection), revision)
    finally:
        engine.dispose()


def rows_writer(tmp_path: Path, **options: Any) -> GroupCommitWriter:
    """A writer on ``tmp_path/store.db`` holding ``rows (name TEXT)``; ``options`` go to it."""
    path = tmp_path / "store.db"
    setup = sqlite_connect(path)
    setup.execute("CREATE TABLE rows (name TEXT NOT NULL)")
    setup.close()
    return GroupCommitWriter(path, max_queued_weight=10_000, **options)
