"""Fixtures of the shared rate-limit tests: the real Redis (see ``shared_ratelimit_support``).

Every test gets its own key prefix, and its keys are deleted afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from shared_ratelimit_support import Door, client_for, connect, delete_prefixed

from support import free_port


@pytest.fixture
def redis_prefix() -> str:
    return f"strongroom-test:{uuid.uuid4().hex}:"


@pytest.fixture
async def redis_client(redis_prefix: str) -> AsyncIterator[Redis]:
    client = await connect()
    try:
        yield client
    finally:
        await delete_prefixed(client, redis_prefix)
        await client.aclose()


@pytest.fixture
async def second_redis_client(redis_client: Redis) -> AsyncIterator[Redis]:
    """Another connection pool to the same Redis, as a second gateway would have."""
    client = await connect()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def refused_client() -> AsyncIterator[Redis]:
    """A client of a loopback port nobody listens on: every connection is refused."""
    client = client_for(f"redis://127.0.0.1:{free_port()}/0")
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def door(redis_client: Redis) -> AsyncIterator[Door]:
    """A shut ``Door`` to the real Redis (which is checked to be up first)."""
    door = Door()
    try:
        yield door
    finally:
        await door.shut()
