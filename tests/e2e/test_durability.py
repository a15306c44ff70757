"""Acknowledged means durable: SIGKILL under load loses nothing and doubles nothing."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from e2e_helpers import assert_well_formed_log, card_free_event, read_topic_cli, read_topic_http

from support import JSON_HEADERS, UNTHROTTLED_ENV, GatewayProcess, event_ids

pytestmark = pytest.mark.slow

WRITERS = 16
LOAD_SECONDS = 3.0
KILL_AFTER_SECONDS = 1.5
MAX_REQUESTS_PER_WRITER = 5_000
BATCH = 10


@dataclass(repr=False)
class Load:
    """What the writers sent and what the gateway acknowledged, shared across threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    killed: threading.Event = field(default_factory=threading.Event)
    sent: dict[str, dict[str, Any]] = field(default_factory=dict)
    acknowledged: set[str] = field(default_factory=set)
    statuses: Counter[int] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    transport_errors_after_kill: int = 0


def _writer(index: int, url: str, load: Load, deadline: float) -> None:
    with httpx.Client(base_url=url, timeout=10, headers=JSON_HEADERS) as client:
        for number in range(MAX_REQUESTS_PER_WRITER):
            if time.monotonic() > deadline:
                return
            events = (
                [card_free_event()]
                if (index + number) % 2
                else [card_free_event() for _ in range(BATCH)]
            )
            body = events[0] if len(events) == 1 else {"events": events}
            with load.lock:
                # In flight from here on: it may or may not be committed.
                load.sent.update((e["event_id"], e) for e in events)
            try:
                response = client.post("/v1/events", json=body)
            except httpx.TransportError as exc:
                with load.lock:
                    if load.killed.is_set():
                        load.transport_errors_after_kill += 1
                    else:
                        load.problems.append(f"transport error before the kill: {exc!r}")
                return
            with load.lock:
                load.statuses[response.status_code] += 1
                if response.status_code != 202:
                    load.problems.append(f"{response.status_code}: {response.text[:200]}")
                    continue
                answer = response.json()
                answered = answer["accepted"] + answer["duplicates"]
                if sorted(answered) != sorted(e["event_id"] for e in events):
                    load.problems.append(f"ack does not match the request: {answer}")
                load.acknowledged.update(answered)


def _run_load_and_kill(gateway: GatewayProcess) -> Load:
    load = Load()
    deadline = time.monotonic() + LOAD_SECONDS
    threads = [
        threading.Thread(target=_writer, args=(i, gateway.url, load, deadline), daemon=True)
        for i in range(WRITERS)
    ]
    for thread in threads:
        thread.start()
    time.sleep(KILL_AFTER_SECONDS)
    with load.lock:
        acknowledged_before_kill = len(load.acknowledged)
    load.killed.set()
    gateway.kill()  # SIGKILL, mid-load
    for thread in threads:
        thread.join(LOAD_SECONDS + 15)
    assert not any(thread.is_alive() for thread in threads), "a writer did not finish"
    assert acknowledged_before_kill >= 100, "the load never got going"
    return load


def _retry_everything(client: httpx.Client, sent: dict[str, dict[str, Any]]) -> tuple[set, set]:
    accepted: set[str] = set()
    duplicates: set[str] = set()
    events = list(sent.values())
    for start in range(0, len(events), 100):
        batch = events[start : start + 100]
        response = client.post("/v1/events", json={"events": batch}, headers=JSON_HEADERS)
        assert response.status_code == 202, response.text
        answer = response.json()
        assert not set(answer["accepted"]) & set(answer["duplicates"])
        accepted.update(answer["accepted"])
        duplicates.update(answer["duplicates"])
    return accepted, duplicates


def test_sigkill_under_load_loses_no_acknowledged_event_and_doubles_none(
    start_gateway: Callable[..., GatewayProcess],
) -> None:
    first = start_gateway(env=UNTHROTTLED_ENV)
    load = _run_load_and_kill(first)
    assert not load.problems, load.problems[:5]
    assert set(load.statuses) == {202}, load.statuses
    assert load.acknowledged <= set(load.sent)

    second = start_gateway(data_dir=first.data_dir, env=UNTHROTTLED_ENV)
    with second.client() as client:
        records = read_topic_http(client)
    assert_well_formed_log(records)
    stored = event_ids(records)
    missing = load.acknowledged - set(stored)
    assert not missing, f"{len(missing)} acknowledged events were lost: {sorted(missing)[:5]}"
    assert set(stored) <= set(load.sent), "the log holds events nobody sent"
    for record in records:
        original = load.sent[record["record"]["event_id"]]
        assert record["record"]["merchant_id_hash"] == original["merchant_id_hash"]

    from_cli = read_topic_cli(second.data_dir)
    assert [(r["offset"], r["record"]["event_id"]) for r in from_cli] == [
        (r["offset"], r["record"]["event_id"]) for r in records
    ]
    assert all(r["topic"] == "payments.tokenized" for r in from_cli)

    # Every id that was in flight or acknowledged, sent again: nothing doubles.
    with second.client() as client:
        accepted, duplicates = _retry_everything(client, load.sent)
        assert duplicates == set(stored)
        assert load.acknowledged <= duplicates
        assert accepted == set(load.sent) - set(stored)
        after_retry = read_topic_http(client)
    assert_well_formed_log(after_retry)
    assert sorted(event_ids(after_retry)) == sorted(load.sent)
    assert after_retry[: len(records)] == records, "the retry rewrote existing records"
