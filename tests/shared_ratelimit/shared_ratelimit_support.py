"""Helpers of the shared rate-limit tests: the real Redis, and Redis going away.

Redis is the server at ``STRONGROOM_TEST_REDIS``. When it is unreachable a test
that needs it is skipped, naming Redis, except with ``CI=true``, where it fails.

Redis "going away" is played on loopback, without touching the real server: a
closed port (connection refused), a ``Silent`` server that accepts connections
and never answers (a hung or partitioned Redis), and a ``Door`` that forwards to
the real Redis while open and refuses connections while shut.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any, Final
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from support import free_port

REDIS_URL: Final = os.environ.get("STRONGROOM_TEST_REDIS", "redis://127.0.0.1:6379/0")


def redis_unreachable(exc: BaseException) -> None:
    """Skip the current test, naming Redis (fail instead with ``CI=true``)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"Redis at {REDIS_URL} is required in CI and is unreachable: {exc}")
    pytest.skip(f"Redis at {REDIS_URL} is unreachable: {exc}")


def client_for(url: str) -> Redis:
    """A client as the gateway makes one: short timeouts."""
    return Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)


async def connect() -> Redis:
    client = client_for(REDIS_URL)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        await client.aclose()
        redis_unreachable(exc)
    return client


async def delete_prefixed(client: Redis, prefix: str) -> None:
    keys = [key async for key in client.scan_iter(match=prefix + "*", count=1000)]
    if keys:
        await client.delete(*keys)


class Silent:
    """A loopback server that accepts connections and never answers a byte."""

    def __init__(self) -> None:
        self.port = free_port()
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._held: list[asyncio.StreamWriter] = []

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._held.append(writer)

    async def __aenter__(self) -> Silent:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for writer in self._held:
            writer.close()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


class Door:
    """A loopback port forwarding to the real Redis while open, refusing while shut."""

    def __init__(self, target: str = REDIS_URL) -> None:
        parts = urlsplit(target)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}{parts.path or '/0'}"
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[Any]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        self._writers += [writer, upstream_writer]
        for task in (
            asyncio.create_task(self._pipe(reader, upstream_writer)),
            asyncio.create_task(self._pipe(upstream_reader, writer)),
        ):
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def shut(self) -> None:
        """Stop listening and cut every forwarded connection, as a Redis restart does."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in self._writers:
            writer.close()
        self._writers.clear()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)


def fallback_total(metrics_text: str) -> float:
    """``strongroom_ratelimit_fallback_total`` in a /metrics page."""
    for line in metrics_text.splitlines():
        if line.startswith("strongroom_ratelimit_fallback_total "):
            return float(line.split()[1])
    raise AssertionError("strongroom_ratelimit_fallback_total is not exported")


class RecordingLog:
    """Records ``(level, event)`` of each line, as the gateway's logger would write it."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def warning(self, event: str, **details: Any) -> None:
        self.lines.append(("warning", event, details))

    def info(self, event: str, **details: Any) -> None:
        self.lines.append(("info", event, details))

    def events(self) -> list[tuple[str, str]]:
        return [(level, event) for level, event, _ in self.lines]


class Counter:
    """An ``on_fallback`` callback that counts its calls."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1
