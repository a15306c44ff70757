"""Fixtures shared by every test layer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from strongroom.api.app import create_app
from strongroom.config import Settings
from support import GatewayProcess, gateway_starter
from support_app import make_settings, peer, running
from support_database import SERVER, SWITCH, on_postgres


def pytest_report_header() -> str:
    """Say where this run keeps the stores, so a CI log shows which pass it is."""
    if on_postgres():
        # Host, port and database only: the URL may carry a password.
        server = SERVER.rsplit("@", 1)[-1]
        return f"store: a PostgreSQL database per data dir on {server} ({SWITCH}=postgres)"
    return f"store: SQLite in each data dir (set {SWITCH}=postgres for PostgreSQL)"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The real app in process, lifespan included, over httpx's ASGI transport."""
    async with running(create_app(settings)) as app, peer(app) as http:
        yield http


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    """Start gateways (default data dir ``tmp_path/data``); every one is stopped at teardown."""
    with gateway_starter(tmp_path / "data") as start:
        yield start


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    """A real ``strongroom serve`` process on a free loopback port."""
    process = GatewayProcess(tmp_path / "data").start(timeout=20.0)
    try:
        yield process
    finally:
        process.stop()
