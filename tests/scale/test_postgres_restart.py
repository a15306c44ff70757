"""A gateway rides out a PostgreSQL restart without being restarted itself.

One gateway on a private PostgreSQL cluster (``support_postgres_server``) takes a
steady load of acknowledged writes from a few threads, bounded in count and time.
Mid-load the server goes away twice, once by a fast shutdown and once by SIGKILL,
for a moment, and comes back on the same port and data dir.

1. During an outage writes are answered 503 ``application/problem+json`` with a
   ``Retry-After`` header: never a 500, never a dropped connection, and never
   slower than the client's timeout.
2. ``/ready`` answers 503 while the server is away and 200 again once it is back.
3. After the restart the same gateway process takes writes (202) again within a
   bounded time: its connection pool recovers by itself.
4. At the end every acknowledged event id is in the log exactly once; the log holds
   no id twice and nothing that was never sent, and its offsets are dense.
5. Usage counters whose flush failed during an outage are kept, not lost: the
   tenant's ``events_ingested`` equals the events the 202 answers accepted.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import httpx
import pytest
from scale_support import NO_LIMITS_ENV, assert_dense, events, ingested, read_topic, wait_for

from support import AUTH, GatewayProcess, gateway_starter
from support_postgres_server import PostgresServer, private_postgres
from support_problems import PROBLEM_JSON

pytestmark = pytest.mark.slow

WRITERS: Final = 4
EVENTS_PER_REQUEST: Final = 5
#: No request may take longer than this, outage or not.
CLIENT_TIMEOUT_SECONDS: Final = 10.0
#: Hard bounds on the load: requests per writer, and seconds in all.
MAX_REQUESTS_PER_WRITER: Final = 5_000
LOAD_DEADLINE_SECONDS: Final = 60.0
#: Acknowledged requests between outages, so that each outage hits a busy gateway.
REQUESTS_BETWEEN_OUTAGES: Final = 60
#: How long the server stays away once the gateway has noticed.
OUTAGE_SECONDS: Final = 1.5
#: The gateway must take writes (and be ready) again this soon after the restart.
RECOVERY_SECONDS: Final = 15.0
#: A writer refused with 503 tries the same events again after this pause.
RETRY_PAUSE_SECONDS: Final = 0.05
#: Often enough that usage flushes fail during each outage.
FLUSH_SECONDS: Final = 0.3


@dataclass
class Load:
    """What the writers saw, shared between them and the test (under ``lock``)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    sent: set[str] = field(default_factory=set)
    acknowledged: set[str] = field(default_factory=set)
    accepted: Counter[str] = field(default_factory=Counter)
    ok_requests: int = 0
    last_ok: float = 0.0
    unavailable: int = 0
    #: Anything that breaks rule 1: 500s, other statuses, malformed 503s, timeouts.
    failures: list[str] = field(default_factory=list)
    slowest: float = 0.0

    def count(self, what: Callable[[Load], int]) -> int:
        with self.lock:
            return what(self)


def write(gateway: GatewayProcess, load: Load, deadline: float) -> None:
    """Post batches until told to stop; a refused batch is retried with the same ids."""
    pending: list[dict[str, object]] = []
    with httpx.Client(base_url=gateway.url, timeout=CLIENT_TIMEOUT_SECONDS) as client:
        for _ in range(MAX_REQUESTS_PER_WRITER):
            if load.stop.is_set() or time.monotonic() > deadline:
                return
            if not pending:
                pending = events(EVENTS_PER_REQUEST)
                with load.lock:
                    load.sent.update(str(event["event_id"]) for event in pending)
            ids = sorted(str(event["event_id"]) for event in pending)
            started = time.monotonic()
            try:
                response = client.post("/v1/events", json={"events": pending}, headers=AUTH)
            except httpx.TransportError as exc:
                waited = time.monotonic() - started
                with load.lock:
                    load.failures.append(f"{type(exc).__name__} after {waited:.1f} s: {exc}")
                time.sleep(RETRY_PAUSE_SECONDS)
                continue
            elapsed = time.monotonic() - started
            with load.lock:
                load.slowest = max(load.slowest, elapsed)
                if response.status_code == 202:
                    body = response.json()
                    if sorted(body["accepted"] + body["duplicates"]) != ids:
                        load.failures.append(f"202 not about the ids sent: {body}")
                    load.acknowledged.update(ids)
                    load.accepted.update(body["accepted"])
                    load.ok_requests += 1
                    load.last_ok = time.monotonic()
                    pending = []
                    continue
                if response.status_code == 503 and _is_retryable_problem(response):
                    load.unavailable += 1
                else:
                    load.failures.append(f"{response.status_code}: {response.text[:300]}")
            time.sleep(RETRY_PAUSE_SECONDS)


def _is_retryable_problem(response: httpx.Response) -> bool:
    return (
        response.headers.get("content-type", "").split(";")[0] == PROBLEM_JSON
        and response.headers.get("retry-after", "").isdigit()
        and response.json().get("status") == 503
    )


def ready_status(gateway: GatewayProcess) -> int:
    response = httpx.get(gateway.url + "/ready", timeout=CLIENT_TIMEOUT_SECONDS)
    if response.status_code == 503:
        assert _is_retryable_problem(response), response.text
    return response.status_code


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    with private_postgres() as server:
        yield server


def test_the_gateway_recovers_from_a_postgres_restart_and_loses_nothing(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    load = Load()
    recoveries: dict[str, dict[str, float]] = {}
    with gateway_starter(tmp_path / "data") as start:
        gateway = start(
            env={
                "STRONGROOM_DATABASE_URL": postgres.url,
                "STRONGROOM_USAGE_FLUSH_SECONDS": str(FLUSH_SECONDS),
                **NO_LIMITS_ENV,
            }
        )
        assert ready_status(gateway) == 200
        deadline = time.monotonic() + LOAD_DEADLINE_SECONDS
        with ThreadPoolExecutor(max_workers=WRITERS) as pool:
            writers = [pool.submit(write, gateway, load, deadline) for _ in range(WRITERS)]
            try:
                for how in ("stop", "kill"):
                    recoveries[how] = outage(postgres, gateway, load, how)
                target = load.count(lambda s: s.ok_requests) + REQUESTS_BETWEEN_OUTAGES
                wait_for(lambda: load.count(lambda s: s.ok_requests) >= target, 20, "load after")
            finally:
                load.stop.set()
                for writer in writers:
                    writer.result(timeout=CLIENT_TIMEOUT_SECONDS + 5)

        with gateway.client() as client:
            log = read_topic(client, AUTH)
            time.sleep(FLUSH_SECONDS * 3)  # a flush or two after the last outage
            usage = ingested(client, AUTH)[0]
        assert gateway.process is not None
        assert gateway.process.poll() is None, "the gateway exited"

    assert not load.failures, f"{len(load.failures)} bad answers, first: {load.failures[:5]}"
    assert load.slowest < CLIENT_TIMEOUT_SECONDS
    stored = Counter(record["record"]["event_id"] for record in log)
    assert [event_id for event_id, n in stored.items() if n > 1] == [], "an id stored twice"
    missing = load.acknowledged - set(stored)
    assert not missing, f"{len(missing)} acknowledged ids are not in the log"
    assert set(stored) <= load.sent, "the log holds ids that were never sent"
    assert [event_id for event_id, n in load.accepted.items() if n > 1] == []
    assert usage == load.accepted.total(), "usage counted during the outages was lost"
    assert_dense([record["offset"] for record in log])
    for how, figures in recoveries.items():
        assert figures["writes_refused"] > 0, f"{how}: no write met the outage"


def outage(
    postgres: PostgresServer, gateway: GatewayProcess, load: Load, how: str
) -> dict[str, float]:
    """Take the server away (fast shutdown or SIGKILL) under load and bring it back."""
    target = load.count(lambda s: s.ok_requests) + REQUESTS_BETWEEN_OUTAGES
    wait_for(lambda: load.count(lambda s: s.ok_requests) >= target, 20, f"load before {how}")
    refused_before = load.count(lambda s: s.unavailable)
    if how == "stop":
        postgres.stop()
    else:
        postgres.kill()
    went_away = time.monotonic()
    wait_for(lambda: ready_status(gateway) == 503, 10, f"/ready 503 after {how}")
    wait_for(lambda: load.count(lambda s: s.unavailable) > refused_before, 10, f"a 503 after {how}")
    time.sleep(OUTAGE_SECONDS)
    postgres.start()
    back = time.monotonic()
    ready_after = wait_for(
        lambda: ready_status(gateway) == 200, RECOVERY_SECONDS, f"/ready 200 after {how}"
    )
    wait_for(
        lambda: load.count(lambda s: s.last_ok) > back,
        RECOVERY_SECONDS,
        f"writes answered 202 again after {how} and restart, without restarting the gateway",
    )
    return {
        "outage_seconds": back - went_away,
        "ready_after_restart_seconds": ready_after,
        "writes_after_restart_seconds": time.monotonic() - back,
        "writes_refused": load.count(lambda s: s.unavailable) - refused_before,
    }
