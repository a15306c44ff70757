"""A TCP proxy on loopback whose connections a test can cut, as a network fault would.

``sever()`` closes every connection open through the proxy at once (both
sides see the connection drop mid-conversation); new connections are accepted
again right away, so a client that reconnects recovers.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from types import TracebackType
from typing import Final

BUFFER: Final = 64 * 1024


class CuttableProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._pairs: dict[socket.socket, socket.socket] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cuttable-proxy", daemon=True)
        self.severed = 0

    def __enter__(self) -> CuttableProxy:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sever()
        self._listener.close()

    def sever(self) -> int:
        """Close every open connection; returns how many were cut."""
        with self._lock:
            sockets = list(self._pairs)
            self._pairs.clear()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self.severed += len(sockets) // 2
        return len(sockets) // 2

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        self._listener.setblocking(False)
        selector.register(self._listener, selectors.EVENT_READ)
        registered: set[socket.socket] = set()
        while not self._stop.is_set():
            with self._lock:
                live = set(self._pairs)
            for gone in registered - live:
                with contextlib.suppress(KeyError, ValueError, OSError):
                    selector.unregister(gone)
            registered &= live
            for sock in live - registered:
                with contextlib.suppress(ValueError, OSError):
                    selector.register(sock, selectors.EVENT_READ)
                    registered.add(sock)
            for key, _ in selector.select(timeout=0.05):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._listener:
                    self._accept()
                else:
                    self._forward(sock)
        selector.close()

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
            upstream = socket.create_connection(self._target, timeout=5)
        except OSError:
            return
        client.setblocking(False)
        upstream.setblocking(False)
        with self._lock:
            self._pairs[client] = upstream
            self._pairs[upstream] = client

    def _forward(self, sock: socket.socket) -> None:
        with self._lock:
            peer = self._pairs.get(sock)
        if peer is None:
            return
        try:
            data = sock.recv(BUFFER)
            if data:
                peer.setblocking(True)
                peer.sendall(data)
                peer.setblocking(False)
                return
        except OSError:
            pass
        with self._lock:
            self._pairs.pop(sock, None)
            self._pairs.pop(peer, None)
        for end in (sock, peer):
            with contextlib.suppress(OSError):
                end.close()
