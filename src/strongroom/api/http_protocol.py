"""uvicorn's httptools protocol, sending each response in one write.

uvicorn writes a response's status line and headers when the app sends
``http.response.start``, and its body on ``http.response.body``: two ``send``
system calls, and on loopback two TCP segments, for a response that is a few
hundred bytes. Both happen in the same turn of the event loop, so the protocol
here gives each connection a transport that gathers what is written during
one turn and hands it to the real transport once, at the end of that turn
(``loop.call_soon``). Nothing waits longer than the turn it was written in.

Rules:

1. Bytes reach the socket in the order they were written.
2. ``close`` first hands over what was gathered, so a response is never cut
   off by the close that follows it; ``abort`` drops it, as it drops whatever
   the real transport still holds.
3. Everything else (flow control, ``get_extra_info``, ``is_closing``) is the
   real transport's.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CoalescingTransport:
    """A transport that hands one turn's writes to ``transport`` in one ``write``."""

    __slots__ = ("_loop", "_pending", "transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        if not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self.transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class CoalescingHttpProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` whose responses go out through a ``CoalescingTransport``."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        coalescing = CoalescingTransport(transport, self.loop)
        super().connection_made(coalescing)  # type: ignore[arg-type]
