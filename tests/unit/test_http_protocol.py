"""One write per response: the coalescing transport, alone and under uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn

from strongroom.api.http_protocol import CoalescingHttpProtocol, CoalescingTransport


class RecordingTransport:
    """Stands in for a socket transport: records every write and close."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1234) if name == "peername" else default


async def next_turn() -> None:
    await asyncio.sleep(0)


async def test_writes_of_one_turn_reach_the_transport_as_one_write_in_order() -> None:
    real = RecordingTransport()
    coalescing = CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]

    coalescing.write(b"HTTP/1.1 202 Accepted\r\n\r\n")
    coalescing.write(b"")
    coalescing.writelines([b'{"accepted":', b"[]}"])
    assert real.writes == []
    await next_turn()
    coalescing.write(b"next")
    await next_turn()

    assert real.writes == [b'HTTP/1.1 202 Accepted\r\n\r\n{"accepted":[]}', b"next"]


async def test_close_sends_what_was_written_first_and_abort_drops_it() -> None:
    loop = asyncio.get_running_loop()
    closed, aborted = RecordingTransport(), RecordingTransport()
    closing = CoalescingTransport(closed, loop)  # type: ignore[arg-type]
    aborting = CoalescingTransport(aborted, loop)  # type: ignore[arg-type]

    closing.write(b"last response")
    closing.close()
    aborting.write(b"never sent")
    aborting.abort()
    await next_turn()

    assert (closed.writes, closed.closed) == ([b"last response"], True)
    assert (aborted.writes, aborted.aborted) == ([], True)


async def test_nothing_is_written_to_a_transport_that_is_closing() -> None:
    real = RecordingTransport()
    coalescing = CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    coalescing.write(b"too late")
    real.closed = True
    await next_turn()

    assert real.writes == []
    assert coalescing.get_extra_info("peername") == ("127.0.0.1", 1234)


async def tiny_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = scope["path"].encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


@contextlib.asynccontextmanager
async def serving(protocol: type[CoalescingHttpProtocol]) -> AsyncIterator[int]:
    """``tiny_app`` under uvicorn with ``protocol`` on a free loopback port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(
        tiny_app, host="127.0.0.1", port=port, http=protocol,
        lifespan="off", log_config=None, access_log=False,
    )  # fmt: skip
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.01)
        yield port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@pytest.fixture
async def server_port() -> AsyncIterator[int]:
    async with serving(CoalescingHttpProtocol) as port:
        yield port


async def test_uvicorn_with_the_protocol_answers_pipelined_requests_in_order(
    server_port: int,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server_port)
    paths = [f"/request-{n}" for n in range(20)]
    writer.write(b"".join(f"GET {p} HTTP/1.1\r\nHost: t\r\n\r\n".encode() for p in paths))
    bodies = []
    for _ in paths:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        bodies.append((await reader.readexactly(length)).decode())
    writer.close()
    await writer.wait_closed()

    assert bodies == paths


#: Every write that reached a socket transport under the recording protocol.
SOCKET_WRITES: list[bytes] = []


class _CountingTransport:
    """The real socket transport, with each write noted in ``SOCKET_WRITES``."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport

    def write(self, data: bytes) -> None:
        SOCKET_WRITES.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CountingProtocol(CoalescingHttpProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_CountingTransport(transport))  # type: ignore[arg-type]


async def test_each_response_reaches_the_socket_in_one_write() -> None:
    """uvicorn alone writes the head and the body of a response separately."""
    SOCKET_WRITES.clear()
    async with serving(CountingProtocol) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for path in ("/one", "/two"):
            writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            await asyncio.wait_for(reader.readuntil(path.encode()), 5)
        writer.close()
        await writer.wait_closed()

    assert len(SOCKET_WRITES) == 2
    assert all(w.startswith(b"HTTP/1.1 200 OK\r\n") for w in SOCKET_WRITES)
    assert [w.rsplit(b"\r\n\r\n", 1)[1] for w in SOCKET_WRITES] == [b"/one", b"/two"]
