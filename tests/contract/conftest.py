"""The store contract: every test runs on each backend, with ids ``sqlite`` and ``postgres``.

``store_url`` is a SQLite file in the test's directory, or a fresh PostgreSQL
database dropped after the test (skipped, naming PostgreSQL, when the server
is unreachable; failed instead with ``CI=true``). Stores are opened the way the
gateway opens them, through ``open_store``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from contract_support import ManualClock, OpenStore

from strongroom.adapters.store import Store, open_store
from strongroom.ports import Clock
from support_app import make_settings
from support_database import fresh_database


@pytest.fixture(params=["sqlite", "postgres"])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    async with fresh_database() as url:
        yield url


@pytest.fixture
def store_settings(store_url: str) -> dict[str, Any]:
    """Settings overrides that place the store (test modules may add a stream engine)."""
    return {"database_url": store_url}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def open_test_store(
    tmp_path: Path, store_settings: dict[str, Any]
) -> AsyncIterator[OpenStore]:
    """``await open_test_store(clock=None, **settings)``: another store on the same database
    (another "gateway"); every one is closed at teardown."""
    opened: list[Store] = []

    async def open_one(clock: Clock | None = None, **overrides: Any) -> Store:
        settings = make_settings(tmp_path, **{**store_settings, **overrides})
        store = await open_store(settings, clock=clock)
        opened.append(store)
        return store

    try:
        yield open_one
    finally:
        for store in reversed(opened):
            await store.aclose()


@pytest.fixture
async def store(open_test_store: OpenStore, clock: ManualClock) -> Store:
    """The store of the test's backend, its logs on the manual ``clock``."""
    return await open_test_store(clock)
