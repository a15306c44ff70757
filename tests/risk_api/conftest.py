"""Fixtures of the risk API tests: the real app in process, and Redis when needed.

When Redis is unreachable a test that needs it is skipped, naming Redis, except
with ``CI=true``, where it fails. Each such test gets its own key prefix, whose
keys are deleted afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Final

import httpx
import pytest
import redis
from fastapi import FastAPI

from strongroom.domain.access import Role
from strongroom.domain.tenancy import DEFAULT_TENANT_ID
from support import bearer
from support_app import InProcessGateway, make_settings, serving

REDIS_URL: Final = os.environ.get("STRONGROOM_TEST_REDIS", "redis://127.0.0.1:6379/0")


@pytest.fixture
async def app_http(tmp_path: Path) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    settings = make_settings(tmp_path, ratelimit_rps=100_000.0, ratelimit_burst=100_000)
    async with serving(settings) as pair:
        yield pair


@pytest.fixture
def http(app_http: tuple[FastAPI, httpx.AsyncClient]) -> httpx.AsyncClient:
    return app_http[1]


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A unique key prefix on a reachable Redis; its keys are deleted afterwards."""
    prefix = f"strongroom-test:{uuid.uuid4().hex}:"
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=5)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        client.close()
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis at {REDIS_URL} is required in CI and is unreachable: {exc}")
        pytest.skip(f"Redis at {REDIS_URL} is unreachable: {exc}")
    try:
        yield prefix
    finally:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
async def admin(app_http: tuple[FastAPI, httpx.AsyncClient]) -> dict[str, str]:
    """Headers with an admin key of the default tenant (the configured keys' tenant)."""
    app, http = app_http
    issued = await InProcessGateway(app, http).key(DEFAULT_TENANT_ID, Role.ADMIN)
    return bearer(issued.secret)
