"""The real app in process: settings, the lifespan, clients on it, and paged reads.

Everything runs over ``httpx.ASGITransport`` with the lifespan entered, as the
root ``client`` fixture does.
"""

from __future__ import annotations

import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from fastapi import FastAPI
from pydantic import SecretStr

from strongroom.api.app import create_app
from strongroom.api.state import GatewayState
from strongroom.config import Settings
from strongroom.domain.access import Role, parse_scopes
from strongroom.domain.tenancy import Tenant
from strongroom.services.keys import IssuedKey
from support import KEY, OTHER_KEY
from support_database import database_overrides

T = TypeVar("T")


def make_settings(directory: Path, **overrides: Any) -> Settings:
    """Data in ``directory/data`` (its store where the suite is switched to, see
    ``support_database``), the two test keys configured, no access log; plus
    ``overrides`` (rate limits, sizes, keys, a database URL of its own)."""
    data_dir = directory / "data"
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "api_keys": (SecretStr(KEY), SecretStr(OTHER_KEY)),
        "access_log": False,
    }
    if "database_url" not in overrides:
        values.update(database_overrides(data_dir))
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[FastAPI]:
    async with app.router.lifespan_context(app):
        yield app


def peer(app: FastAPI, ip: str = "127.0.0.1") -> httpx.AsyncClient:
    """A client whose requests reach ``app`` from the socket peer ``ip``."""
    transport = httpx.ASGITransport(app=app, client=(ip, 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://gateway")


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app on ``settings``, lifespan entered, and a client on it from 127.0.0.1."""
    async with running(create_app(settings)) as app, peer(app) as http:
        yield app, http


def numbered_factory(tmp_path: Path, open_one: Callable[..., T]) -> Callable[..., T]:
    """``factory(**overrides)`` is ``open_one(tmp_path / "appN", **overrides)``, N counting up."""
    counter = iter(range(1_000))

    def factory(**overrides: Any) -> T:
        return open_one(tmp_path / f"app{next(counter)}", **overrides)

    return factory


async def read_pages(
    http: httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    *,
    params: dict[str, Any] | None = None,
    pages: int | None = 1_000,
    what: str = "the stream",
) -> list[dict[str, Any]]:
    """Every item of a paged listing (``data``/``next``, 1000 a page), following ``after``
    for at most ``pages`` pages (no limit if None)."""
    items: list[dict[str, Any]] = []
    query: dict[str, Any] = {"limit": 1000, **(params or {})}
    for _ in itertools.count() if pages is None else range(pages):
        response = await http.get(url, params=query, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(page["data"])
        if page["next"] is None:
            return items
        query["after"] = page["next"]
    raise AssertionError(f"{what} did not end")


@dataclass
class InProcessGateway:
    """One in-process gateway (lifespan entered) and a client on it."""

    app: FastAPI
    http: httpx.AsyncClient

    @property
    def state(self) -> GatewayState:
        state: GatewayState = self.app.state.gateway
        return state

    async def tenant(self, name: str | None = None) -> Tenant:
        return await self.state.tenants.create(name or f"tenant-{uuid.uuid4().hex[:12]}")

    async def key(
        self,
        tenant: Tenant | str,
        role: Role | str = Role.ADMIN,
        *,
        scopes: Iterable[str] | None = None,
        platform: bool = False,
        expires_at: float | None = None,
        name: str = "test key",
        mode: str = "live",
    ) -> IssuedKey:
        """A key made as an operator at the CLI would make it (no granter)."""
        return await self.state.keys.create(
            tenant_id=tenant if isinstance(tenant, str) else tenant.id,
            name=name,
            role=Role(role),
            scopes=None if scopes is None else parse_scopes(scopes),
            expires_at=expires_at,
            granted_by=None,
            mode="test" if mode == "test" else "live",
            platform=platform,
        )

    def peer(self, ip: str) -> httpx.AsyncClient:
        """A client whose requests reach the app from the socket peer ``ip``."""
        return peer(self.app, ip)
