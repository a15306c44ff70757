"""Fixtures shared by every test layer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from strongroom.api.app import create_app
from strongroom.config import Settings
from support import KEY, OTHER_KEY, GatewayProcess


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        api_keys=(SecretStr(KEY), SecretStr(OTHER_KEY)),
        access_log=False,
    )


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The real app in process, lifespan included, over httpx's ASGI transport."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            yield http


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    """A real ``strongroom serve`` process on a free loopback port."""
    process = GatewayProcess(tmp_path / "data").start()
    try:
        yield process
    finally:
        process.stop()
