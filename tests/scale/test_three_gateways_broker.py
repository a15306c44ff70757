"""Three gateways on one broker (Redis Streams or Kafka) and one PostgreSQL, under faults.

The gateways share a fresh PostgreSQL database (keys, tenants, and on Kafka the
gateway's dedup index and group state), a stream prefix on the broker, and the
install's secrets in one data dir. Loaders, each owning one merchant (the
partition key), send their events one request after the other to random
gateways, and send about a third of them a second time to another gateway
(overlapping idempotent retries). Mid-load, gateway A is killed with -9; on
Redis, the broker connections of gateway C are cut (it reaches Redis through a
proxy). A refused or failed request is retried on another gateway, as a client
would, until acknowledged.

Then: every acknowledged event is delivered exactly once to a consumer group
and to ``strongroom stream tail`` (on Kafka, readers drop repeats by event id:
a gateway killed between the broker's acknowledgement and its index commit
can leave a record twice on the broker), nothing unacknowledged shows up more
than once, and each merchant's events come in the order they were sent.

Separately, three gateways sharing their rate limits through Redis, hammered
with one key, allow that key's burst within 10% in all, not three bursts.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
from scale_support import NO_LIMITS_ENV, body_of, wait_for

from support import AUTH, TOKENIZED_URL, GatewayProcess, card_free_event, gateway_starter
from support_cli import cli_ok, json_lines
from support_database import create_database, drop_databases
from support_proxy import CuttableProxy
from support_streams import REDIS_URL, kafka_url, redis_reachable, unique_prefix

pytestmark = pytest.mark.slow

__all__ = ["kafka_url"]  # the session's broker, a fixture

MERCHANTS: Final = 12
EVENTS_PER_MERCHANT: Final = 60
#: Acknowledged requests after which gateway A is killed, and C's broker link cut.
KILL_AFTER: Final = 70
CUT_AFTER: Final = 140
LOAD_SECONDS: Final = 120
#: The shared per-key limit: a window of BURST / RPS = 10 s, longer than the hammering.
LIMIT_RPS: Final = 15
LIMIT_BURST: Final = 150
HAMMER_SECONDS: Final = 3.0


@dataclass
class Deployment:
    engine: str
    gateways: list[GatewayProcess]
    data_dir: Path
    env: dict[str, str]
    proxy: CuttableProxy | None


@contextmanager
def _deployed(
    request: pytest.FixtureRequest, tmp_path: Path, engine: str, extra: dict[str, str]
) -> Iterator[Deployment]:
    prefix = unique_prefix()
    url = asyncio.run(create_database())
    try:
        with ExitStack() as stack:
            proxy = None
            if engine == "redis":
                redis_reachable()
                proxy = stack.enter_context(CuttableProxy("127.0.0.1", 6379))
                stream, cut_stream = REDIS_URL, f"redis://127.0.0.1:{proxy.port}/0"
                stack.callback(_delete_redis_keys, prefix)
            else:
                stream = cut_stream = request.getfixturevalue("kafka_url")
            data_dir = tmp_path / "data"
            env = {
                "STRONGROOM_DATABASE_URL": url,
                "STRONGROOM_STREAM_URL": stream,
                "STRONGROOM_STREAM_PREFIX": prefix,
                "STRONGROOM_REDIS_RATELIMIT_PREFIX": prefix + "ratelimit:",
                **NO_LIMITS_ENV,
                **extra,
            }
            data = ("--data-dir", str(data_dir))
            cli_ok("db", "upgrade", *data, env=env)
            cli_ok("init", *data, env=env)
            start = stack.enter_context(gateway_starter(data_dir))
            gateways = [
                start(env=env),
                start(env=env),
                start(env={**env, "STRONGROOM_STREAM_URL": cut_stream}),
            ]
            yield Deployment(engine, gateways, data_dir, env, proxy)
    finally:
        asyncio.run(drop_databases([url]))


@pytest.fixture(params=["redis", "kafka"])
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Deployment]:
    with _deployed(request, tmp_path, request.param, {}) as deployed:
        yield deployed


@pytest.fixture
def limited_deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Deployment]:
    """Three gateways whose per-key limit is shared through Redis."""
    limits = {
        "STRONGROOM_REDIS_URL": REDIS_URL,
        "STRONGROOM_RATELIMIT_RPS": str(LIMIT_RPS),
        "STRONGROOM_RATELIMIT_BURST": str(LIMIT_BURST),
    }
    with _deployed(request, tmp_path, "redis", limits) as deployed:
        yield deployed


def _delete_redis_keys(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@dataclass
class Ledger:
    """What the loaders were told: acknowledged ids, in send order per merchant."""

    acknowledged: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    requests: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _load(deployment: Deployment, ledger: Ledger, faults: threading.Event) -> None:
    alive = list(deployment.gateways)
    clients = {gateway.url: gateway.client() for gateway in alive}
    deadline = time.monotonic() + LOAD_SECONDS

    def send(batch: list[dict[str, Any]], rng: random.Random) -> None:
        for _ in range(200):
            if time.monotonic() > deadline:
                raise AssertionError("load did not finish in time")
            gateway = rng.choice([g for g in alive if g is not killed.get("a")])
            try:
                response = clients[gateway.url].post(
                    "/v1/events", json=body_of(batch), headers=AUTH
                )
            except httpx.HTTPError as exc:
                with ledger.lock:
                    ledger.failures[type(exc).__name__] += 1
                continue
            if response.status_code == 202:
                return
            with ledger.lock:
                ledger.failures[str(response.status_code)] += 1
            time.sleep(0.05)
        raise AssertionError("a batch was never acknowledged")

    killed: dict[str, GatewayProcess] = {}

    def merchant(number: int) -> None:
        rng = random.Random(number)
        merchant_hash = f"{number:02x}" * 32
        sent = 0
        while sent < EVENTS_PER_MERCHANT:
            size = rng.randint(1, 4)
            batch = [
                card_free_event(merchant_id_hash=merchant_hash)
                for _ in range(min(size, EVENTS_PER_MERCHANT - sent))
            ]
            send(batch, rng)
            if rng.random() < 0.35:
                send(batch, rng)  # the same events again: an idempotent retry
            sent += len(batch)
            with ledger.lock:
                ledger.acknowledged[merchant_hash].extend(e["event_id"] for e in batch)
                ledger.requests += 1
                count = ledger.requests
            if count == KILL_AFTER and "a" not in killed:
                killed["a"] = deployment.gateways[0]
                deployment.gateways[0].kill()
                faults.set()
            if count == CUT_AFTER and deployment.proxy is not None:
                deployment.proxy.sever()

    try:
        with ThreadPoolExecutor(max_workers=MERCHANTS) as pool:
            list(pool.map(merchant, range(MERCHANTS)))
    finally:
        for client in clients.values():
            client.close()


def _group_deliveries(client: httpx.Client) -> list[dict[str, Any]]:
    delivered: list[dict[str, Any]] = []
    for _ in range(1000):
        response = client.post(
            f"{TOKENIZED_URL}/groups/audit-check/read",
            json={"consumer": "checker", "limit": 500},
            headers=AUTH,
        )
        assert response.status_code == 200, response.text
        page = response.json()["data"]
        if not page:
            return delivered
        delivered.extend(page)
        acked = client.post(
            f"{TOKENIZED_URL}/groups/audit-check/ack",
            json={"offsets": [record["offset"] for record in page]},
            headers=AUTH,
        )
        assert acked.status_code == 200, acked.text
    raise AssertionError("the group did not drain within 1,000 reads")


def _assert_exactly_once_in_order(
    records: list[dict[str, Any]], ledger: Ledger, reader: str
) -> None:
    acknowledged = {i for ids in ledger.acknowledged.values() for i in ids}
    counts = Counter(record["record"]["event_id"] for record in records)
    repeated = [event_id for event_id, n in counts.items() if n > 1]
    assert not repeated, f"{reader}: delivered more than once: {repeated[:5]}"
    missing = acknowledged - set(counts)
    assert not missing, f"{reader}: acknowledged but not delivered: {sorted(missing)[:5]}"
    offsets = [record["offset"] for record in records]
    assert offsets == sorted(offsets), f"{reader}: not in offset order"
    by_merchant: dict[str, list[str]] = defaultdict(list)
    for record in records:
        by_merchant[record["record"]["merchant_id_hash"]].append(record["record"]["event_id"])
    for merchant_hash, sent in ledger.acknowledged.items():
        delivered = [i for i in by_merchant[merchant_hash] if i in set(sent)]
        assert delivered == sent, f"{reader}: merchant {merchant_hash[:8]} out of send order"


def test_acknowledged_events_are_delivered_once_in_order_despite_kills_and_cuts(
    deployment: Deployment,
) -> None:
    ledger = Ledger()
    faults = threading.Event()

    _load(deployment, ledger, faults)

    assert faults.is_set(), "gateway A was never killed"
    if deployment.proxy is not None:
        assert deployment.proxy.severed > 0, "no broker connection of gateway C was cut"
    survivor = deployment.gateways[1]
    with survivor.client() as client:
        delivered = _group_deliveries(client)
    _assert_exactly_once_in_order(delivered, ledger, "consumer group")

    tail = json_lines(
        cli_ok(
            "stream", "tail", "--topic", "payments.tokenized", "--from", "0", "--json",
            "--data-dir", str(deployment.data_dir), env=deployment.env,
        )
    )  # fmt: skip
    _assert_exactly_once_in_order(tail, ledger, "stream tail")

    # Gateway C, whose broker link was cut, answers again.
    with deployment.gateways[2].client() as client:
        wait_for(
            lambda: (
                client.post("/v1/events", json=card_free_event(), headers=AUTH).status_code == 202
            ),
            30,
            "gateway C accepting events after the cut",
        )


def test_the_per_key_limit_holds_across_three_gateways(limited_deployment: Deployment) -> None:
    allowed: Counter[str] = Counter()
    refused: Counter[str] = Counter()
    deadline = time.monotonic() + HAMMER_SECONDS

    def hammer(gateway: GatewayProcess) -> None:
        with gateway.client() as client:
            for _ in range(10_000):
                if time.monotonic() > deadline:
                    return
                status = client.get(TOKENIZED_URL, headers=AUTH).status_code
                (allowed if status == 200 else refused)[gateway.url] += 1

    with ThreadPoolExecutor(max_workers=9) as pool:
        list(pool.map(hammer, limited_deployment.gateways * 3))

    total = sum(allowed.values())
    # Within one window every gateway draws on one budget of LIMIT_BURST requests.
    assert abs(total - LIMIT_BURST) <= LIMIT_BURST * 0.10, (total, dict(allowed))
    assert len(allowed) == 3, f"a gateway allowed nothing: {dict(allowed)}"
    assert sum(refused.values()) > total, "the gateways were not pushed past the limit"
