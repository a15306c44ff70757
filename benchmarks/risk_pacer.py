"""A constant-rate load generator for ``POST /v1/transactions/evaluate`` (wrk2's method).

``python -m benchmarks.risk_pacer URL TOKEN RATE SECONDS CONNECTIONS SERIES`` sends
``RATE`` requests per second for ``SECONDS`` seconds on up to ``CONNECTIONS``
keep-alive connections and prints one ``BENCH_RESULT {json}`` line.

The schedule is fixed in advance: request i is due at ``start + i / RATE``,
whether or not earlier ones were answered (an open loop). Latency is measured
from when a request was *due*, not from when a free connection sent it, so a
stalled server is charged for the requests it kept waiting: the coordinated
omission that a closed loop (wrk's ``delay()``) hides. Every loop is bounded:
scheduling stops after ``SECONDS``, and requests still unanswered
``DRAIN_SECONDS`` later are counted as timed out, at their latency so far.

The API key comes from the ``BENCH_API_KEY`` environment variable.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any, Final
from urllib.parse import urlsplit

import uvloop

DRAIN_SECONDS: Final = 10.0
RESULT_PREFIX: Final = "BENCH_RESULT "


def _body(series: int, n: int, token: str) -> bytes:
    return json.dumps(
        {
            "transaction_id": f"p{series:05d}-{n}",
            "amount": 500 + n % 5000,
            "currency": "EUR",
            "merchant_id_hash": f"m_bench{n % 50}",
            "card": {"token": token},
            "device_id": f"dev_{n % 500}",
            "ip": f"203.0.113.{n % 250}",
            "country": "DE",
            "channel": "web",
        },
        separators=(",", ":"),
    ).encode()


def _request(host: str, path: str, key: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> int:
    """Send one request and read its response; returns the status code."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


class Pacer:
    def __init__(self, url: str, token: str, rate: float, seconds: float, connections: int) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.path = parts.path
        self.token = token
        self.rate = rate
        self.seconds = seconds
        self.connections = connections
        self.key = os.environ["BENCH_API_KEY"]
        self.latencies: list[float] = []
        self.statuses: dict[int, int] = {}
        self.errors = 0
        self.idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )
        self.opened = 0

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.idle.empty() and self.opened < self.connections:
            self.opened += 1
            return await asyncio.open_connection(self.host, self.port)
        return await self.idle.get()

    async def _one(self, request: bytes, due: float) -> None:
        connection = await self._connection()
        try:
            status = await _exchange(*connection, request)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            self.errors += 1
            self.opened -= 1
            connection[1].close()
            return
        self.latencies.append(time.perf_counter() - due)
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.idle.put_nowait(connection)

    async def run(self, series: int) -> dict[str, Any]:
        total = int(self.rate * self.seconds)
        requests = [
            _request(self.host, self.path, self.key, _body(series, n, self.token))
            for n in range(total)
        ]
        tasks: list[tuple[float, asyncio.Task[None]]] = []
        start = time.perf_counter()
        for n, request in enumerate(requests):
            due = start + n / self.rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append((due, asyncio.create_task(self._one(request, due))))
        sent_for = time.perf_counter() - start
        pending = [task for _, task in tasks]
        _, late = await asyncio.wait(pending, timeout=DRAIN_SECONDS)
        now = time.perf_counter()
        timed_out = 0
        for due, task in tasks:
            if task in late:
                task.cancel()
                timed_out += 1
                self.latencies.append(now - due)
        while not self.idle.empty():
            self.idle.get_nowait()[1].close()
        wall = time.perf_counter() - start
        answered = sum(self.statuses.values())
        ok = sum(count for code, count in self.statuses.items() if 200 <= code < 300)
        return {
            "rate_asked": self.rate,
            "seconds": round(sent_for, 3),
            "requests": total,
            "answered": answered,
            "requests_2xx": ok,
            "requests_2xx_per_s": round(ok / sent_for, 1) if sent_for else 0.0,
            "timed_out": timed_out,
            "socket_errors": self.errors,
            "statuses": {str(code): count for code, count in sorted(self.statuses.items())},
            "connections_opened": self.opened,
            "wall_seconds": round(wall, 3),
            "latency_ms": _percentiles(self.latencies),
        }


def _percentiles(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    if not ordered:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}

    def at(percent: float) -> float:
        index = min(len(ordered) - 1, max(0, round(percent / 100 * len(ordered)) - 1))
        return round(1000 * ordered[index], 3)

    return {"p50": at(50), "p90": at(90), "p99": at(99), "max": round(1000 * ordered[-1], 3)}


def main(argv: list[str]) -> int:
    url, token, rate, seconds, connections, series = argv
    pacer = Pacer(url, token, float(rate), float(seconds), int(connections))
    result = uvloop.run(pacer.run(int(series)))
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
