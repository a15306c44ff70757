"""When Redis cannot be reached, or refuses writes, the event log fails fast with
``StorageUnavailable`` (503 with Retry-After at the API) and records nothing;
when it is back, the same call succeeds as if the failed one had never been made.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from redis.asyncio import Redis

from strongroom.adapters.redis_streams import open_redis_event_log
from strongroom.errors import StorageUnavailable
from strongroom.ports import EventLog, NewRecord
from support import free_port
from support_app import make_settings
from support_streams import REDIS_URL, _missing, redis_stream_settings

TOPIC = "payments.tokenized"
TENANT = "ten_outage"
#: Connect timeout plus one retry, with room for a loaded machine.
FAIL_FAST_SECONDS = 6.0


class Switch:
    """A loopback TCP forwarder to Redis that a test takes down (open connections
    cut, the port refusing new ones) and brings back on the same port."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._forward, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _forward(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        self._writers.add(client_out)
        try:
            redis_in, redis_out = await asyncio.open_connection(*self._target)
        except OSError:
            client_out.close()
            return
        self._writers.add(redis_out)
        await asyncio.gather(self._pipe(client_in, redis_out), self._pipe(redis_in, client_out))

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except OSError:
            pass
        finally:
            sink.close()
            self._writers.discard(sink)


@pytest.fixture
def own_redis() -> Iterator[str]:
    """A Redis server of this test's own (memory only), whose settings it may change."""
    binary = shutil.which("redis-server")
    if binary is None:
        _missing("redis-server", "not on PATH")
    port = free_port()
    argv = [
        str(binary), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
    ]  # fmt: skip
    server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, socket_connect_timeout=1, socket_timeout=1, retry=None)
    try:
        deadline = time.monotonic() + 10
        while not _answers(client):
            assert time.monotonic() < deadline, "redis-server did not start within 10 s"
            assert server.poll() is None, "redis-server exited at start"
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        server.terminate()
        server.wait(10)


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


@pytest.fixture
async def stream() -> AsyncIterator[dict[str, Any]]:
    async with redis_stream_settings() as overrides:
        yield overrides


@pytest.fixture
async def switch() -> AsyncIterator[Switch]:
    target = urlsplit(REDIS_URL)
    forwarder = Switch(target.hostname or "127.0.0.1", target.port or 6379)
    await forwarder.up()
    yield forwarder
    await forwarder.down()


def records(*ids: str) -> list[NewRecord]:
    return [NewRecord(TENANT, record_id, "key", record_id.encode()) for record_id in ids]


async def read_ids(log: EventLog) -> list[str]:
    return [r.record_id for r in await log.read(TOPIC, tenant=TENANT, after=None, limit=100)]


async def test_opening_the_log_on_a_closed_port_fails_fast(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, stream_url=f"redis://127.0.0.1:{free_port()}/0")
    started = time.monotonic()

    with pytest.raises(StorageUnavailable, match="Redis"):
        await open_redis_event_log(settings, None)

    assert time.monotonic() - started < FAIL_FAST_SECONDS


async def test_an_outage_refuses_writes_records_nothing_and_the_retry_is_accepted(
    tmp_path: Path, stream: dict[str, Any], switch: Switch
) -> None:
    database_db = urlsplit(REDIS_URL).path or "/0"
    through = {**stream, "stream_url": f"redis://127.0.0.1:{switch.port}{database_db}"}
    gateway = await open_redis_event_log(make_settings(tmp_path, **through), None)
    direct = await open_redis_event_log(make_settings(tmp_path, **stream), None)
    try:
        assert (await gateway.append(TOPIC, records("before"))).accepted == ("before",)
        await switch.down()

        started = time.monotonic()
        with pytest.raises(StorageUnavailable):
            await gateway.append(TOPIC, records("during-1", "during-2"))
        with pytest.raises(StorageUnavailable):
            await gateway.check_writable()
        with pytest.raises(StorageUnavailable):
            await gateway.group_read(
                TOPIC, "g", tenant=TENANT, consumer="c", limit=10,
                visibility_timeout=30, max_deliveries=3,
            )  # fmt: skip
        assert time.monotonic() - started < 3 * FAIL_FAST_SECONDS
        assert await read_ids(direct) == ["before"]
        assert await direct.length(TOPIC) == 1

        await switch.up()
        await gateway.check_writable()
        retry = await gateway.append(TOPIC, records("during-1", "during-2"))
        assert (retry.accepted, retry.duplicates) == (("during-1", "during-2"), ())
        assert await read_ids(direct) == ["before", "during-1", "during-2"]
    finally:
        await gateway.aclose()
        await direct.aclose()


async def test_a_closed_log_refuses_calls(tmp_path: Path, stream: dict[str, Any]) -> None:
    log = await open_redis_event_log(make_settings(tmp_path, **stream), None)
    await log.aclose()
    await log.aclose()

    with pytest.raises(StorageUnavailable, match="closed"):
        await log.append(TOPIC, records("late"))


async def test_a_redis_that_refuses_writes_gets_nothing_and_the_retry_is_accepted(
    tmp_path: Path, own_redis: str
) -> None:
    log = await open_redis_event_log(make_settings(tmp_path, stream_url=own_redis), None)
    admin = Redis.from_url(own_redis, socket_timeout=5)
    try:
        await log.append(TOPIC, records("before"))
        # Redis now refuses every write, as it does out of memory or without its replicas.
        await admin.config_set("min-replicas-to-write", 1)

        with pytest.raises(StorageUnavailable, match="NOREPLICAS"):
            await log.append_together(
                [(TOPIC, records("during")), ("payments.raw", records("during"))]
            )
        with pytest.raises(StorageUnavailable, match="NOREPLICAS"):
            await log.check_writable()
        assert await read_ids(log) == ["before"]
        assert await log.length("payments.raw") == 0

        await admin.config_set("min-replicas-to-write", 0)
        tokenized, raw = await log.append_together(
            [(TOPIC, records("during")), ("payments.raw", records("during"))]
        )
        assert (tokenized.accepted, raw.accepted) == (("during",), ("during",))
    finally:
        await admin.aclose()
        await log.aclose()
