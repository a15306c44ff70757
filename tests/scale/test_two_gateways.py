"""Two gateway processes of one deployment, sharing one PostgreSQL database.

Both gateways run ``strongroom serve`` on the same data dir (which, with
PostgreSQL, holds only the install's secrets: pepper, audit signing key, KEK
keyring) and the same fresh database on the shared server.

1. The same events, sent to both gateways at once from many threads, are each
   accepted exactly once across all answers (every other answer calls them
   duplicates) and stored once; the topic's offsets are dense and strictly
   increasing, and a reader tailing the topic on the other gateway while the
   writes happen never steps over a record that commits later.
2. Two members of one consumer group, one on each gateway, are never handed the
   same record while it is pending, neither when it is new nor when its
   visibility timeout expired; acknowledgements count on either gateway.
3. A key created over the API on one gateway authenticates on the other, and its
   revocation on the other is honoured on the first within the key cache time.
4. Usage counted on both gateways adds up, once flushed, and each gateway reports
   the sum.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import cycle
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
from scale_support import (
    NO_LIMITS_ENV,
    assert_dense,
    body_of,
    events,
    ingested,
    read_topic,
    wait_for,
)

from support import (
    AUTH,
    JSON_HEADERS,
    TOKENIZED_URL,
    GatewayProcess,
    bearer,
    card_free_event,
    gateway_starter,
)
from support_cli import cli_ok
from support_database import create_database, drop_databases

pytestmark = pytest.mark.slow

FLUSH_SECONDS: Final = 0.5
KEY_CACHE_SECONDS: Final = 1.0
EVENTS: Final = 2_000
WORKERS: Final = 16
#: Different batch shapes on each gateway, so that shared ids meet in different
#: group-commit transactions, some of them single-event requests.
A_SIZES: Final = (1, 4, 7, 2)
B_SIZES: Final = (3, 1, 5, 6)


@dataclass(frozen=True)
class Deployment:
    a: GatewayProcess
    b: GatewayProcess
    data_dir: Path
    env: dict[str, str]
    platform_admin: str


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    url = asyncio.run(create_database())
    try:
        data_dir = tmp_path_factory.mktemp("two-gateways") / "data"
        env = {
            "STRONGROOM_DATABASE_URL": url,
            "STRONGROOM_USAGE_FLUSH_SECONDS": str(FLUSH_SECONDS),
            "STRONGROOM_KEY_CACHE_SECONDS": str(KEY_CACHE_SECONDS),
            **NO_LIMITS_ENV,
        }
        data = ("--data-dir", str(data_dir))
        cli_ok("db", "upgrade", *data, env=env)
        # The install's secrets are made once, here; both gateways then read them.
        admin = cli_ok("init", *data, env=env).strip().splitlines()[-1]
        with gateway_starter(data_dir) as start:
            yield Deployment(start(env=env), start(env=env), data_dir, env, admin)
    finally:
        asyncio.run(drop_databases([url]))


def chunks(items: Sequence[dict[str, Any]], sizes: Sequence[int]) -> list[list[dict[str, Any]]]:
    """``items`` cut into consecutive requests of ``sizes``, repeated."""
    out: list[list[dict[str, Any]]] = []
    position = 0
    shapes = cycle(sizes)
    while position < len(items):
        size = next(shapes)
        out.append(list(items[position : position + size]))
        position += size
    return out


@dataclass(frozen=True)
class Answer:
    gateway: str
    sent: tuple[str, ...]
    status: int
    body: dict[str, Any]


def test_the_same_events_through_both_gateways_are_stored_once_in_order(
    deployment: Deployment,
) -> None:
    batch = events(EVENTS)
    ids = [event["event_id"] for event in batch]
    a_requests = [("a", chunk) for chunk in chunks(batch, A_SIZES)]
    b_requests = [("b", chunk) for chunk in chunks(batch, B_SIZES)]
    # Interleaved so both gateways reach the same ids at about the same time.
    work = [item for pair in zip(a_requests, b_requests, strict=False) for item in pair]
    work += a_requests[len(b_requests) :] + b_requests[len(a_requests) :]
    limits = httpx.Limits(max_connections=WORKERS, max_keepalive_connections=WORKERS)
    with (
        deployment.a.client(limits=limits) as a,
        deployment.b.client(limits=limits) as b,
    ):
        clients = {"a": a, "b": b}
        start = len(read_topic(a, AUTH))
        tail_offsets: list[int] = []
        writing = threading.Event()
        writing.set()

        def tail() -> None:
            # Reads what is committed so far, on the other gateway, as a consumer
            # that polls with ``after`` would: a record committing out of offset
            # order would be stepped over for good.
            after = start - 1
            while True:
                still_writing = writing.is_set()
                params: dict[str, Any] = {"after": after, "limit": 1000}
                response = b.get(TOKENIZED_URL, params=params, headers=AUTH)
                assert response.status_code == 200, response.text
                page = [record["offset"] for record in response.json()["data"]]
                tail_offsets.extend(page)
                if page:
                    after = page[-1]
                elif not still_writing:
                    return
                else:
                    time.sleep(0.01)

        def send(item: tuple[str, list[dict[str, Any]]]) -> Answer:
            name, chunk = item
            response = clients[name].post("/v1/events", json=body_of(chunk), headers=AUTH)
            sent = tuple(event["event_id"] for event in chunk)
            body = response.json() if response.status_code == 202 else {"text": response.text}
            return Answer(name, sent, response.status_code, body)

        with ThreadPoolExecutor(max_workers=WORKERS + 1) as pool:
            tailer = pool.submit(tail)
            try:
                answers = list(pool.map(send, work))
            finally:
                writing.clear()
            tailer.result(timeout=30)
        log = read_topic(b, AUTH)

    refused = [answer for answer in answers if answer.status != 202]
    assert not refused, f"{len(refused)} of {len(answers)} requests refused: {refused[:3]}"
    accepted: Counter[str] = Counter()
    duplicates: Counter[str] = Counter()
    for answer in answers:
        assert sorted(answer.body["accepted"] + answer.body["duplicates"]) == sorted(answer.sent)
        accepted.update(answer.body["accepted"])
        duplicates.update(answer.body["duplicates"])
    twice = [event_id for event_id, count in accepted.items() if count > 1]
    assert not twice, f"accepted more than once: {twice[:5]}"
    # Each id was sent twice, once to each gateway: one answer accepts it, one calls it
    # a duplicate.
    assert set(accepted) == set(ids)
    assert duplicates == Counter(ids)
    by_gateway = Counter(answer.gateway for answer in answers if answer.body["accepted"])
    assert by_gateway["a"], f"gateway A accepted nothing: {by_gateway}"
    assert by_gateway["b"], f"gateway B accepted nothing: {by_gateway}"

    assert_dense([record["offset"] for record in log])
    new = log[start:]
    stored = Counter(record["record"]["event_id"] for record in new)
    assert [event_id for event_id, count in stored.items() if count > 1] == []
    assert set(stored) == set(ids)
    assert len(new) == EVENTS
    assert tail_offsets == [record["offset"] for record in new], "the tail stepped over a record"


def _fill(client: httpx.Client, count: int, per_request: int = 20) -> None:
    batch = events(count)
    for position in range(0, count, per_request):
        chunk = batch[position : position + per_request]
        response = client.post("/v1/events", json=body_of(chunk), headers=AUTH)
        assert response.status_code == 202, response.text
        assert len(response.json()["accepted"]) == len(chunk)


def _consume_concurrently(
    group_url: str, members: Sequence[tuple[GatewayProcess, str]], *, limit: int
) -> dict[str, list[tuple[int, int]]]:
    """Each member reads (no ack, long visibility) on its gateway until two empty reads;
    returns what each was handed as (offset, deliveries)."""
    barrier = threading.Barrier(len(members))

    def consume(gateway: GatewayProcess, consumer: str) -> list[tuple[int, int]]:
        got: list[tuple[int, int]] = []
        empty = 0
        deadline = time.monotonic() + 30
        with gateway.client() as client:
            barrier.wait(10)
            while empty < 2:
                assert time.monotonic() < deadline, f"{consumer} kept reading for 30 s"
                response = client.post(
                    f"{group_url}/read",
                    json={"consumer": consumer, "limit": limit, "visibility_timeout_seconds": 120},
                    headers=JSON_HEADERS,
                )
                assert response.status_code == 200, response.text
                data = response.json()["data"]
                empty = 0 if data else empty + 1
                got += [(item["offset"], item["deliveries"]) for item in data]
        return got

    with ThreadPoolExecutor(max_workers=len(members)) as pool:
        futures = {consumer: pool.submit(consume, gw, consumer) for gw, consumer in members}
        return {consumer: future.result(timeout=60) for consumer, future in futures.items()}


def _ack(client: httpx.Client, group_url: str, offsets: Sequence[int]) -> int:
    """Acknowledge ``offsets`` (1000 a request at most); returns how many were settled."""
    settled = 0
    for position in range(0, len(offsets), 1000):
        response = client.post(
            f"{group_url}/ack",
            json={"offsets": list(offsets[position : position + 1000])},
            headers=JSON_HEADERS,
        )
        assert response.status_code == 200, response.text
        settled += response.json()["acknowledged"]
    return settled


def _assert_split(handed: dict[str, list[tuple[int, int]]], expected: set[int]) -> None:
    """Every expected offset went to exactly one member, once; each member got some."""
    offsets = Counter(offset for got in handed.values() for offset, _ in got)
    shared = sorted(offset for offset, count in offsets.items() if count > 1)
    assert not shared, f"handed to both members while pending: {shared[:10]}"
    assert set(offsets) == expected
    assert all(handed.values()), {member: len(got) for member, got in handed.items()}


def test_two_members_of_one_group_on_two_gateways_never_share_a_pending_record(
    deployment: Deployment,
) -> None:
    a, b = deployment.a, deployment.b
    group_url = f"{TOKENIZED_URL}/groups/g-{uuid.uuid4().hex[:8]}"
    members = [(a, "on-a"), (b, "on-b")]
    with a.client() as on_a, b.client() as on_b:
        _fill(on_a, 120)
        _fill(on_b, 120)
        everything = {record["offset"] for record in read_topic(on_a, AUTH)}

        handed = _consume_concurrently(group_url, members, limit=4)
        _assert_split(handed, everything)
        assert {deliveries for got in handed.values() for _, deliveries in got} == {1}

        # Acknowledged on the other member's gateway: the pending rows are shared.
        for client, got in ((on_b, handed["on-a"]), (on_a, handed["on-b"])):
            assert _ack(client, group_url, [offset for offset, _ in got]) == len(got)

        # Expired deliveries: taken on A with a one-second timeout and not acknowledged,
        # then both members race for them once they are visible again.
        before = {record["offset"] for record in read_topic(on_a, AUTH)}
        _fill(on_b, 40)
        fresh = {record["offset"] for record in read_topic(on_a, AUTH)} - before
        response = on_a.post(
            f"{group_url}/read",
            json={"consumer": "on-a", "limit": 1000, "visibility_timeout_seconds": 1},
            headers=JSON_HEADERS,
        )
        assert response.status_code == 200, response.text
        assert {item["offset"] for item in response.json()["data"]} == fresh
        time.sleep(1.3)
        handed = _consume_concurrently(group_url, members, limit=3)
        _assert_split(handed, fresh)
        assert {deliveries for got in handed.values() for _, deliveries in got} == {2}

        assert _ack(on_b, group_url, sorted(fresh)) == len(fresh)
        for client in (on_a, on_b):
            response = client.post(f"{group_url}/read", json={"limit": 1000}, headers=JSON_HEADERS)
            assert response.json() == {"data": []}


def test_a_key_made_on_one_gateway_works_on_the_other_until_revoked_there(
    deployment: Deployment,
) -> None:
    admin = bearer(deployment.platform_admin)
    with deployment.a.client() as on_a, deployment.b.client() as on_b:
        created = on_a.post(
            "/v1/keys", json={"name": "made on a", "role": "operator"}, headers=admin
        )
        assert created.status_code == 201, created.text
        key = bearer(created.json()["key"])

        posted = on_b.post("/v1/events", json=card_free_event(), headers=key)
        assert posted.status_code == 202, posted.text
        assert on_b.get("/v1/usage", headers=key).status_code == 200
        assert on_a.get("/v1/usage", headers=key).status_code == 200

        revoked = on_b.delete(f"/v1/keys/{created.json()['id']}", headers=admin)
        assert revoked.status_code == 204, revoked.text
        assert on_b.get("/v1/usage", headers=key).status_code == 401
        wait_for(
            lambda: on_a.get("/v1/usage", headers=key).status_code == 401,
            KEY_CACHE_SECONDS + 4,
            "a key revoked on gateway B refused on gateway A",
        )


def test_usage_counted_on_both_gateways_adds_up(deployment: Deployment) -> None:
    admin = bearer(deployment.platform_admin)
    with deployment.a.client() as on_a, deployment.b.client() as on_b:
        tenant = on_a.post(
            "/v1/admin/tenants", json={"name": f"usage-{uuid.uuid4().hex[:8]}"}, headers=admin
        )
        assert tenant.status_code == 201, tenant.text
        secret = cli_ok(
            "keys", "create", "--tenant", tenant.json()["id"], "--role", "operator",
            "--data-dir", str(deployment.data_dir), env=deployment.env,
        ).strip().splitlines()[-1]  # fmt: skip
        headers = {**bearer(secret), "Content-Type": "application/json"}

        sent_events = sent_bytes = 0
        for client, per_request, requests in ((on_a, 3, 7), (on_b, 1, 5), (on_a, 1, 2)):
            for _ in range(requests):
                content = json.dumps(body_of(events(per_request))).encode()
                response = client.post("/v1/events", content=content, headers=headers)
                assert response.status_code == 202, response.text
                sent_events += per_request
                sent_bytes += len(content)

        expected = (sent_events, sent_bytes)
        wait_for(
            lambda: ingested(on_a, headers) == expected and ingested(on_b, headers) == expected,
            FLUSH_SECONDS * 10,
            f"both gateways reporting {expected} (events, bytes)",
        )
        # Later flushes add nothing: nothing was counted twice.
        time.sleep(FLUSH_SECONDS * 3)
        assert ingested(on_a, headers) == expected
        assert ingested(on_b, headers) == expected
