"""Backpressure: a full writer queue answers 503 at once, stores nothing, and recovers."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from e2e_helpers import assert_well_formed_log, card_free_event, read_topic_http

from support import JSON_HEADERS, UNTHROTTLED_ENV, GatewayProcess, event_ids

pytestmark = pytest.mark.slow

QUEUE_MAX_EVENTS = 100
SENDERS = 24
BATCHES_PER_SENDER = 4
BATCH = 100
RETRY_ATTEMPTS = 20


@dataclass(repr=False)
class Burst:
    lock: threading.Lock = field(default_factory=threading.Lock)
    acknowledged: set[str] = field(default_factory=set)
    refused: list[list[dict[str, Any]]] = field(default_factory=list)
    refusals: list[httpx.Response] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    queue_gauge: list[float] = field(default_factory=list)


def _sender(url: str, batches: list[list[dict[str, Any]]], start: threading.Barrier, burst: Burst):
    with httpx.Client(base_url=url, timeout=30, headers=JSON_HEADERS) as client:
        client.get("/health")  # connect before the barrier, so the batches really collide
        start.wait(30)
        for batch in batches:
            try:
                response = client.post("/v1/events", json={"events": batch})
            except httpx.TransportError as exc:
                with burst.lock:
                    burst.problems.append(f"transport error: {exc!r}")
                return
            with burst.lock:
                burst.statuses[response.status_code] += 1
                if response.status_code == 202:
                    answer = response.json()
                    burst.acknowledged.update(answer["accepted"] + answer["duplicates"])
                elif response.status_code == 503:
                    burst.refused.append(batch)
                    burst.refusals.append(response)
                else:
                    burst.problems.append(f"{response.status_code}: {response.text[:300]}")


def _watch_queue(url: str, stop: threading.Event, burst: Burst) -> None:
    gauge = re.compile(r"^strongroom_log_writer_queued_events (\S+)$", re.MULTILINE)
    deadline = time.monotonic() + 60
    with httpx.Client(base_url=url, timeout=10) as client:
        while not stop.is_set() and time.monotonic() < deadline:
            match = gauge.search(client.get("/metrics").text)
            if match:
                with burst.lock:
                    burst.queue_gauge.append(float(match.group(1)))
            time.sleep(0.01)


def test_full_writer_queue_refuses_with_503_and_stores_nothing_refused(
    start_gateway: Callable[..., GatewayProcess],
) -> None:
    gateway = start_gateway(
        env={**UNTHROTTLED_ENV, "STRONGROOM_WRITER_QUEUE_MAX_EVENTS": str(QUEUE_MAX_EVENTS)}
    )
    burst = Burst()
    plans = [
        [[card_free_event() for _ in range(BATCH)] for _ in range(BATCHES_PER_SENDER)]
        for _ in range(SENDERS)
    ]
    barrier = threading.Barrier(SENDERS)
    senders = [
        threading.Thread(target=_sender, args=(gateway.url, plan, barrier, burst), daemon=True)
        for plan in plans
    ]
    stop_watching = threading.Event()
    watcher = threading.Thread(
        target=_watch_queue, args=(gateway.url, stop_watching, burst), daemon=True
    )
    watcher.start()
    for thread in senders:
        thread.start()
    for thread in senders:
        thread.join(60)
    stop_watching.set()
    watcher.join(15)
    assert not any(thread.is_alive() for thread in [*senders, watcher])

    assert not burst.problems, burst.problems[:5]
    assert set(burst.statuses) <= {202, 503}, burst.statuses
    assert burst.statuses[202] >= 1, burst.statuses
    assert burst.statuses[503] >= 1, f"the queue bound never pushed back: {burst.statuses}"
    for refusal in burst.refusals:
        assert refusal.headers["Content-Type"].startswith("application/problem+json")
        assert refusal.headers["Retry-After"].isdigit()
        assert int(refusal.headers["Retry-After"]) >= 1
        body = refusal.json()
        assert body["status"] == 503
        assert body["type"].endswith("/overloaded")
        assert body["request_id"] == refusal.headers["X-Request-ID"]
    assert burst.queue_gauge, "the writer queue gauge was never scraped"
    assert max(burst.queue_gauge) <= QUEUE_MAX_EVENTS

    refused_ids = {e["event_id"] for batch in burst.refused for e in batch}
    with gateway.client() as client:
        stored = event_ids(read_topic_http(client))
    assert burst.acknowledged <= set(stored), "an acknowledged event is missing"
    assert not refused_ids & set(stored), "an event refused with 503 was stored"

    # After the burst, the refused batches go through.
    with gateway.client(headers=JSON_HEADERS) as client:
        for batch in burst.refused:
            for _ in range(RETRY_ATTEMPTS):
                response = client.post("/v1/events", json={"events": batch})
                if response.status_code != 503:
                    break
                time.sleep(min(int(response.headers["Retry-After"]), 1))
            assert response.status_code == 202, response.text
            assert sorted(response.json()["accepted"]) == sorted(e["event_id"] for e in batch)
            assert response.json()["duplicates"] == []
        records = read_topic_http(client)
    assert_well_formed_log(records)
    everything = {e["event_id"] for plan in plans for batch in plan for e in batch}
    assert set(event_ids(records)) == everything
