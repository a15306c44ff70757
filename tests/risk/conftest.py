"""Fixtures of the risk tests: Redis (real, at ``STRONGROOM_TEST_REDIS``) and counters.

When Redis is unreachable a test that needs it is skipped, naming Redis, except
with ``CI=true``, where it fails. Every test gets its own key prefix, and its
keys are deleted afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from typing import Final

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

REDIS_URL: Final = os.environ.get("STRONGROOM_TEST_REDIS", "redis://127.0.0.1:6379/0")


async def _connect() -> Redis:
    client = Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=5)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        await client.aclose()
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis at {REDIS_URL} is required in CI and is unreachable: {exc}")
        pytest.skip(f"Redis at {REDIS_URL} is unreachable: {exc}")
    return client


@pytest.fixture
def redis_prefix() -> str:
    return f"strongroom-test:{uuid.uuid4().hex}:"


@pytest.fixture
async def redis_client(redis_prefix: str) -> AsyncIterator[Redis]:
    client = await _connect()
    try:
        yield client
    finally:
        keys = [key async for key in client.scan_iter(match=redis_prefix + "*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture
async def second_redis_client(redis_client: Redis) -> AsyncIterator[Redis]:
    """Another connection pool, as a second gateway would have."""
    client = await _connect()
    try:
        yield client
    finally:
        await client.aclose()
