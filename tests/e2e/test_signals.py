"""Signals: SIGHUP reloads keys without dropping connections; SIGTERM drains and exits 0."""

from __future__ import annotations

import contextlib
import http.client
import json
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_helpers import TOPIC, card_free_event, read_topic_http

from support import JSON_HEADERS, UNTHROTTLED_ENV, GatewayProcess, event_ids

pytestmark = pytest.mark.slow

KEY_A = "rotation-key-A-0123456789abcdef"
KEY_B = "rotation-key-B-fedcba9876543210"


def _status(gateway: GatewayProcess, key: str) -> int:
    response = httpx.get(
        f"{gateway.url}/v1/streams/{TOPIC}",
        headers={"Authorization": f"Bearer {key}"},
        timeout=5,
    )
    return response.status_code


def _keep_alive_get(connection: http.client.HTTPConnection, key: str) -> int:
    connection.request("GET", f"/v1/streams/{TOPIC}", headers={"Authorization": f"Bearer {key}"})
    response = connection.getresponse()
    response.read()
    assert response.getheader("Connection", "").lower() != "close"
    return response.status


def _start_with_keys_from(
    env_file: Path, start_gateway: Callable[..., GatewayProcess]
) -> GatewayProcess:
    """A gateway whose only keys come from ``env_file``, which holds key A at first."""
    env_file.write_text(f"STRONGROOM_API_KEYS={KEY_A}\n")
    return start_gateway(
        env={**UNTHROTTLED_ENV, "STRONGROOM_ENV_FILE": str(env_file)},
        unset=["STRONGROOM_API_KEYS"],
    )


def test_sighup_rotates_keys_without_dropping_connections(
    start_gateway: Callable[..., GatewayProcess], tmp_path: Path
) -> None:
    env_file = tmp_path / "strongroom.env"
    gateway = _start_with_keys_from(env_file, start_gateway)
    assert "STRONGROOM_API_KEYS" not in gateway.env
    assert _status(gateway, KEY_A) == 200
    assert _status(gateway, KEY_B) == 401

    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    try:
        assert _keep_alive_get(connection, KEY_A) == 200
        socket_before = connection.sock
        assert socket_before is not None

        env_file.write_text(f"STRONGROOM_API_KEYS={KEY_B}\nSTRONGROOM_REVOKED_KEYS={KEY_A}\n")
        gateway.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while _status(gateway, KEY_B) != 200:
            assert time.monotonic() < deadline, "key B never started working after SIGHUP"
            assert gateway.process is not None
            assert gateway.process.poll() is None, (
                f"SIGHUP stopped the gateway:\n{gateway.output()}"
            )
            time.sleep(0.1)

        refused = httpx.get(
            f"{gateway.url}/v1/streams/{TOPIC}",
            headers={"Authorization": f"Bearer {KEY_A}"},
            timeout=5,
        )
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
        assert refused.headers["Content-Type"].startswith("application/problem+json")

        # The connection opened before the reload still serves, on the same socket.
        assert _keep_alive_get(connection, KEY_B) == 200
        assert _keep_alive_get(connection, KEY_A) == 401
        assert connection.sock is socket_before, "the keep-alive connection was dropped"
    finally:
        connection.close()
    assert gateway.process is not None
    assert gateway.process.poll() is None
    assert "keys_reloaded" in gateway.stderr()


def test_sighup_with_a_broken_env_file_keeps_the_current_keys(
    start_gateway: Callable[..., GatewayProcess], tmp_path: Path
) -> None:
    env_file = tmp_path / "strongroom.env"
    gateway = _start_with_keys_from(env_file, start_gateway)
    env_file.write_text("STRONGROOM_API_KEYS=tiny-k3y\n")
    gateway.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "keys_reload_failed" not in gateway.stderr():
        assert time.monotonic() < deadline, "the failed reload was never logged"
        time.sleep(0.1)
    assert _status(gateway, KEY_A) == 200
    assert "tiny-k3y" not in gateway.output(), "the rejected key was echoed"


THREADS = 24
BATCH = 100
MAX_REQUESTS_PER_THREAD = 200
LOAD_SECONDS = 8.0
LATE_SENDERS = 48
LATE_WAVE_LEAD_SECONDS = 0.1


@dataclass(repr=False)
class Drain:
    """One SIGTERM under load, as the clients and the restarted gateway saw it."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    terminated_at: float | None = None
    acknowledged: set[str] = field(default_factory=set)
    statuses: Counter[int] = field(default_factory=Counter)
    completed_across_sigterm: int = 0
    #: Requests sent before SIGTERM that got no response:
    #: (seconds before SIGTERM, error, earlier responses on that connection, ids).
    dropped_in_flight: list[tuple[float, str, int, set[str]]] = field(default_factory=list)
    refused_after_sigterm: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    exit_code: int | None = None
    exit_seconds: float | None = None
    stderr: str = ""
    stored: list[str] = field(default_factory=list)


_TEMPLATE = card_free_event()


def _fresh_batch() -> list[dict[str, Any]]:
    """A batch of new event ids, cheap to make so the senders keep the gateway busy."""
    return [{**_TEMPLATE, "event_id": str(uuid.uuid4())} for _ in range(BATCH)]


def _send_batch(
    client: httpx.Client,
    drain: Drain,
    events: list[dict[str, Any]],
    responses: int,
    on_sent: Callable[[], None] | None = None,
) -> bool:
    """POST one batch and account for its outcome; False when the connection failed."""
    body = json.dumps({"events": events}).encode()
    sent_at: list[float] = []

    def trace(name: str, _: object) -> None:
        # The moment the whole request is in the socket: from then on it is in flight.
        if name == "http11.send_request_body.complete":
            sent_at.append(time.monotonic())
            if on_sent is not None:
                on_sent()

    started = time.monotonic()
    try:
        response = client.post(
            "/v1/events", content=body, headers=JSON_HEADERS, extensions={"trace": trace}
        )
    except httpx.TransportError as exc:
        with drain.lock:
            terminated = drain.terminated_at
            if terminated is None:
                drain.problems.append(f"transport error before SIGTERM: {exc!r}")
            elif sent_at and sent_at[0] < terminated:
                ids = {e["event_id"] for e in events}
                drain.dropped_in_flight.append((terminated - sent_at[0], repr(exc), responses, ids))
            else:
                drain.refused_after_sigterm[type(exc).__name__] += 1
        return False
    finished = time.monotonic()
    with drain.lock:
        drain.statuses[response.status_code] += 1
        if response.status_code != 202:
            drain.problems.append(f"{response.status_code}: {response.text[:300]}")
            return False
        answer = response.json()
        answered = answer["accepted"] + answer["duplicates"]
        if sorted(answered) != sorted(e["event_id"] for e in events):
            drain.problems.append(f"ack does not match the request: {answer}")
        drain.acknowledged.update(answered)
        terminated = drain.terminated_at
        if terminated is not None and started < terminated < finished:
            drain.completed_across_sigterm += 1
    return True


def _batch_sender(url: str, drain: Drain, deadline: float) -> None:
    """Keeps one connection busy with batches until the deadline or a failure."""
    with httpx.Client(base_url=url, timeout=20) as client:
        # Every earlier request was answered (a failure ends the loop), so the index is
        # how many responses this connection has carried.
        for responses in range(MAX_REQUESTS_PER_THREAD):
            if time.monotonic() > deadline:
                return
            events = _fresh_batch()
            if not _send_batch(client, drain, events, responses):
                return


def _late_sender(url: str, drain: Drain, go: threading.Event, sent: threading.Semaphore) -> None:
    """One batch on a new connection, completely sent well before SIGTERM."""
    events = _fresh_batch()
    with httpx.Client(base_url=url, timeout=20) as client:
        if go.wait(30):
            _send_batch(client, drain, events, 0, on_sent=sent.release)


@pytest.fixture(scope="module")
def sigterm_under_load(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Drain]:
    """SIGTERM while busy, then a restart to read the log.

    24 connections keep 100-event batches flowing; then a wave of new connections each
    sends one batch, and SIGTERM follows once all of those are completely written to
    their sockets (a trace hook marks the moment), so they are unambiguously in flight.
    """
    data_dir = tmp_path_factory.mktemp("sigterm") / "data"
    gateway = GatewayProcess(data_dir, UNTHROTTLED_ENV)
    restarted = GatewayProcess(data_dir, UNTHROTTLED_ENV)
    drain = Drain()
    try:
        gateway.start()
        deadline = time.monotonic() + LOAD_SECONDS
        threads = [
            threading.Thread(target=_batch_sender, args=(gateway.url, drain, deadline), daemon=True)
            for _ in range(THREADS)
        ]
        for thread in threads:
            thread.start()
        warm_until = time.monotonic() + 5
        while time.monotonic() < warm_until:
            with drain.lock:
                if len(drain.acknowledged) >= 10 * BATCH:
                    break
            time.sleep(0.02)
        # A wave of new connections while the gateway is busy, well before SIGTERM.
        go, sent = threading.Event(), threading.Semaphore(0)
        late = [
            threading.Thread(target=_late_sender, args=(gateway.url, drain, go, sent), daemon=True)
            for _ in range(LATE_SENDERS)
        ]
        for thread in late:
            thread.start()
        threads.extend(late)
        go.set()
        for _ in late:
            assert sent.acquire(timeout=30), "a late request was never sent"
        time.sleep(LATE_WAVE_LEAD_SECONDS)
        assert gateway.process is not None
        with drain.lock:
            drain.terminated_at = time.monotonic()
        gateway.signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            drain.exit_code = gateway.process.wait(10)
            drain.exit_seconds = time.monotonic() - drain.terminated_at
        for thread in threads:
            thread.join(30)
        assert not any(thread.is_alive() for thread in threads)
        gateway.ensure_stopped()
        drain.stderr = gateway.stderr()
        restarted.start()
        with restarted.client() as client:
            drain.stored = event_ids(read_topic_http(client))
        yield drain
    finally:
        gateway.ensure_stopped()
        restarted.ensure_stopped()


def test_sigterm_keeps_every_acknowledged_event(sigterm_under_load: Drain) -> None:
    drain = sigterm_under_load
    assert not drain.problems, drain.problems[:5]
    assert set(drain.statuses) == {202}, drain.statuses
    assert len(drain.acknowledged) >= BATCH, "the load never got going"
    assert len(drain.stored) == len(set(drain.stored)), "an event is stored twice"
    missing = drain.acknowledged - set(drain.stored)
    assert not missing, f"{len(missing)} acknowledged events are not in the log"
    for *_, ids in drain.dropped_in_flight:
        assert not ids & set(drain.stored) or ids <= set(drain.stored), "a batch half-stored"


def test_sigterm_completes_requests_in_flight(sigterm_under_load: Drain) -> None:
    drain = sigterm_under_load
    assert drain.completed_across_sigterm >= 1, "no request was in flight at SIGTERM"
    dropped = drain.dropped_in_flight
    stored = set(drain.stored)
    assert not dropped, (
        f"{len(dropped)} requests sent before SIGTERM got no response (sent up to "
        f"{max(d[0] for d in dropped) * 1000:.0f} ms before it; "
        f"{sum(d[2] == 0 for d in dropped)} were the first request on their connection, "
        f"the others followed a response on a kept-alive connection; "
        f"{sum(bool(d[3] & stored) for d in dropped)} were stored): "
        f"{sorted({d[1] for d in dropped})}"
    )


def test_sigterm_exits_zero_within_ten_seconds(sigterm_under_load: Drain) -> None:
    drain = sigterm_under_load
    assert drain.exit_code is not None, f"still running 10 s after SIGTERM:\n{drain.stderr[-2000:]}"
    assert drain.exit_seconds is not None
    assert drain.exit_seconds < 10
    assert "gateway_stopped" in drain.stderr
    errors = [
        line for line in drain.stderr.splitlines()
        if line.startswith("{") and json.loads(line).get("level") in {"error", "critical"}
    ]  # fmt: skip
    assert not errors, errors[:3]
    assert drain.exit_code == 0, (
        f"exit code {drain.exit_code} after SIGTERM; a graceful stop must exit 0"
    )
