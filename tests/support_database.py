"""Throwaway PostgreSQL databases for tests, and the switch that runs a suite on them.

``fresh_database()`` is an async context manager around one new database (for
fixtures). ``database_overrides(data_dir)`` is what ``make_settings`` and the
gateway processes add to their settings: nothing by default, and with
``STRONGROOM_TEST_DATABASE=postgres`` the URL of a database of that data dir
(the same one each time the dir is named, so a restarted gateway finds its
data), created on first use and dropped when the test process exits.

The server is ``STRONGROOM_TEST_POSTGRES`` (default
``postgresql://postgres@127.0.0.1:5432/test``). When it is unreachable the test
is skipped, naming PostgreSQL, except with ``CI=true``, where it fails.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import threading
import uuid
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any, Final, TypeVar

import asyncpg
import pytest

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
