"""A decision answered 200 is durable: SIGKILL under concurrent load loses none of them.

Decisions share commits (group commit); none may be answered before its commit.
After a kill -9 mid-load, a restarted gateway on the same data dir must find
every answered decision by its trace id, unchanged, and on ``risk.decisions``;
and the same requests sent again are replays of those decisions, not new ones.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from risk_api_support import EVALUATE, transaction

from support import AUTH, UNTHROTTLED_ENV, GatewayProcess

pytestmark = pytest.mark.slow

WRITERS = 16
LOAD_SECONDS = 4.0
KILL_AFTER_SECONDS = 2.0
MAX_REQUESTS_PER_WRITER = 2_000
#: Three known cards, so velocity and first-seen change between decisions.
CARDS = 3


@dataclass(repr=False)
class Load:
    lock: threading.Lock = field(default_factory=threading.Lock)
    killed: threading.Event = field(default_factory=threading.Event)
    #: transaction id -> (request body, Idempotency-Key)
    sent: dict[str, tuple[dict[str, Any], str]] = field(default_factory=dict)
    #: trace id -> the answer the client got
    answered: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _writer(index: int, url: str, tokens: list[str], load: Load, deadline: float) -> None:
    with httpx.Client(base_url=url, timeout=10, headers=AUTH) as client:
        for number in range(MAX_REQUESTS_PER_WRITER):
            if time.monotonic() > deadline:
                return
            body = transaction({"token": tokens[(index + number) % CARDS]})
            key = f"k-{index}-{number}-{body['transaction_id']}"
            with load.lock:
                load.sent[body["transaction_id"]] = (body, key)
            try:
                response = client.post(EVALUATE, json=body, headers={"Idempotency-Key": key})
            except httpx.TransportError as exc:
                with load.lock:
                    if not load.killed.is_set():
                        load.problems.append(f"transport error before the kill: {exc!r}")
                return
            with load.lock:
                if response.status_code != 200:
                    load.problems.append(f"{response.status_code}: {response.text[:200]}")
                    continue
                answer = response.json()
                load.answered[answer["trace_id"]] = answer


def _read_decisions_stream(client: httpx.Client) -> set[str]:
    trace_ids: set[str] = set()
    after: int | None = None
    for _ in range(1_000):
        params: dict[str, Any] = {"limit": 1000}
        if after is not None:
            params["after"] = after
        page = client.get("/v1/streams/risk.decisions", params=params)
        assert page.status_code == 200, page.text
        data = page.json()["data"]
        trace_ids.update(item["record"]["trace_id"] for item in data)
        if page.json()["next"] is None:
            return trace_ids
        after = page.json()["next"]
    raise AssertionError("the stream did not end within 1,000 pages")


def test_sigkill_under_load_loses_no_answered_decision(
    start_gateway: Callable[..., GatewayProcess],
) -> None:
    first = start_gateway(env=UNTHROTTLED_ENV)
    with first.client(headers=AUTH) as http:
        tokens = [
            http.post(
                "/v1/tokens",
                json={"number": number, "exp_month": 12, "exp_year": 2040},
            ).json()["token"]
            for number in ("4242424242424242", "5555555555554444", "4000056655665556")
        ]
    load = Load()
    deadline = time.monotonic() + LOAD_SECONDS
    threads = [
        threading.Thread(target=_writer, args=(i, first.url, tokens, load, deadline), daemon=True)
        for i in range(WRITERS)
    ]
    for thread in threads:
        thread.start()
    time.sleep(KILL_AFTER_SECONDS)
    with load.lock:
        answered_before_kill = len(load.answered)
    load.killed.set()
    first.kill()  # SIGKILL, mid-load
    for thread in threads:
        thread.join(LOAD_SECONDS + 15)
    assert not any(thread.is_alive() for thread in threads), "a writer did not finish"
    assert not load.problems, load.problems[:5]
    assert answered_before_kill >= 50, "the load never got going"

    second = start_gateway(data_dir=first.data_dir, env=UNTHROTTLED_ENV)
    with second.client(headers=AUTH) as http:
        for trace_id, answer in load.answered.items():
            stored = http.get(f"/v1/decisions/{trace_id}")
            assert stored.status_code == 200, f"answered decision {trace_id} was lost"
            assert {name: stored.json()[name] for name in answer} == answer
        on_stream = _read_decisions_stream(http)
        missing = set(load.answered) - on_stream
        assert not missing, f"{len(missing)} answered decisions are not on risk.decisions"
        # Every request sent again is a replay of its answered decision, never a new one.
        by_transaction = {a["transaction_id"]: a for a in load.answered.values()}
        for transaction_id, answer in list(by_transaction.items())[:200]:
            body, key = load.sent[transaction_id]
            again = http.post(EVALUATE, json=body, headers={"Idempotency-Key": key})
            assert again.status_code == 200, again.text
            assert again.headers.get("Idempotent-Replayed") == "true"
            assert again.json()["trace_id"] == answer["trace_id"]
