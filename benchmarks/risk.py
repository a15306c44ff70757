"""The ``risk`` benchmark group: evaluations per second and latency, in process and over HTTP.

Run with ``python -m benchmarks.run --only risk`` (``make bench`` runs every group).

1. In process, one call at a time on the server's core, uvloop as in the gateway:
   (a) ``RiskService.evaluate`` with the default policy on in-memory stores and
   counters, the core of a decision; (b) the same through ``open_gateway``'s
   service, as the gateway runs it: SQL decision and policy stores (SQLite) and
   the decision published on ``risk.decisions``.
2. Over HTTP: ``python -m strongroom serve`` on a fresh data dir, driven by wrk
   with ``benchmarks/risk.lua``: a known card token at 16 connections as fast as
   the gateway answers, the same paced at 1,000 evaluations/s (wrk's ``delay()``;
   wrk2 is not installed, so latencies are not corrected for coordinated
   omission), and a new card number in every request (tokenized first).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Final

import httpx
import uvloop

from benchmarks.run import (
    BENCH_DIR,
    RATE_LIMIT_VARIABLES,
    UNLIMITED_RATE,
    CpuSample,
    GroupReport,
    HarnessError,
    Runner,
    TargetCheck,
    WrkRun,
    _children_cpu_s,
    _latency_ms,
    cpu_usage,
    free_port,
    gateway_env,
    isolated_settings,
    machine_line,
    pinned,
    pinned_here,
    scenario_group,
    server,
    target_table,
    tool,
)
from strongroom.api.state import open_gateway
from strongroom.domain.tenancy import DEFAULT_TENANT_ID
from strongroom.observability.logging import get_logger
from strongroom.observability.metrics import Metrics
from strongroom.services.risk import (
    CardRef,
    MemoryDecisionStore,
    MemoryPolicyStore,
    RiskRequest,
    RiskService,
)
from strongroom.services.velocity import MemorySeenCards, MemoryVelocityCounter

RISK_SCRIPT: Final = BENCH_DIR / "risk.lua"
HTTP_CONNECTIONS: Final = 16
PACED_RATE: Final = 1000
IN_PROCESS_SECONDS: Final = 5.0
IN_PROCESS_WARMUP: Final = 500
IN_PROCESS_MAX_OPS: Final = 200_000
P99_IN_PROCESS_MS: Final = 2.0
P99_HTTP_MS: Final = 15.0
EVALUATIONS_PER_S: Final = 3000
CARDS: Final = 1000


def _request(n: int) -> RiskRequest:
    return RiskRequest(
        transaction_id=f"bench-{n}",
        amount=500 + n % 5000,
        currency="EUR",
        merchant_id_hash=f"m_bench{n % 50}",
        card=CardRef(token=f"tok_bench{n % CARDS:020d}", last4="4242", brand="visa"),
        device_id=f"dev_{n % 500}",
        ip=f"203.0.113.{n % 250}",
        country="DE",
        channel="web",
    )


async def _time_evaluations(risk: RiskService, tenant: str) -> dict[str, Any]:
    for n in range(IN_PROCESS_WARMUP):
        await risk.evaluate(tenant, _request(-1 - n), time.time())
    latencies: list[float] = []
    started = time.perf_counter()
    n = 0
    while time.perf_counter() - started < IN_PROCESS_SECONDS and n < IN_PROCESS_MAX_OPS:
        request = _request(n)
        now = time.time()
        begin = time.perf_counter()
        await risk.evaluate(tenant, request, now)
        latencies.append(time.perf_counter() - begin)
        n += 1
    wall = time.perf_counter() - started
    return {
        "evaluations": n,
        "seconds": round(wall, 3),
        "evaluations_per_s": round(n / wall, 1),
        "latency_ms": _latency_ms(latencies),
    }


def _memory_service() -> RiskService:
    return RiskService(
        policies=MemoryPolicyStore(),
        decisions=MemoryDecisionStore(),
        velocity=MemoryVelocityCounter(),
        seen_cards=MemorySeenCards(),
        hash_ip=lambda ip: ip,
    )


async def _gateway_service(data_dir: Path) -> dict[str, Any]:
    state = await open_gateway(
        isolated_settings(data_dir), Metrics(), get_logger("bench"), migrate=True
    )
    try:
        return await _time_evaluations(state.risk, DEFAULT_TENANT_ID)
    finally:
        await state.aclose()


def measure_in_process(runner: Runner, work_dir: Path) -> dict[str, Any]:
    with pinned_here(runner.server_cpu):
        core = uvloop.run(_time_evaluations(_memory_service(), "bench"))
        gateway = uvloop.run(_gateway_service(work_dir / "in-process-data"))
    return {"memory_stores": core, "gateway_stores": gateway}


def wrk_evaluate(
    runner: Runner, url: str, mode: str, token: str, rate: int, seconds: int, series: int
) -> WrkRun:
    argv = pinned(
        runner.load_cpu,
        [
            tool("wrk"), "-t1", f"-c{HTTP_CONNECTIONS}", f"-d{seconds}s", "--latency",
            "--timeout", "10s", "-s", str(RISK_SCRIPT), url, "--",
            str(series), mode, str(time.gmtime().tm_year + 3), token, str(rate),
            str(HTTP_CONNECTIONS),
        ],
    )  # fmt: skip
    env = {**os.environ, "BENCH_API_KEY": runner.api_key}
    done = subprocess.run(
        argv, capture_output=True, text=True, env=env, timeout=seconds + 60, check=False
    )
    if done.returncode != 0:
        raise HarnessError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return WrkRun.parse(done.stdout)


def _http_row(
    runner: Runner, url: str, mode: str, token: str, rate: int, pid: int, series: int
) -> dict[str, Any]:
    warmup = wrk_evaluate(runner, url, mode, token, rate, runner.warmup_s, series)
    before = CpuSample.take(pid, runner.server_cpu)
    children_before = _children_cpu_s()
    measured = wrk_evaluate(runner, url, mode, token, rate, runner.duration_s, series + 1)
    wrk_cpu_s = _children_cpu_s() - children_before
    after = CpuSample.take(pid, runner.server_cpu)
    cpu = cpu_usage(
        before, after, measured.duration_s, measured.requests, runner.server_cpu is not None
    )
    if cpu is not None and measured.duration_s > 0:
        cpu["load_generator_cpu_percent"] = round(100 * wrk_cpu_s / measured.duration_s, 1)
    return {
        "card": mode,
        "rate": rate or "max",
        "connections": HTTP_CONNECTIONS,
        "requests_per_s": round(measured.requests_per_s, 1),
        "requests_2xx_per_s": round(measured.ok_per_s, 1),
        "latency_ms": measured.latency_ms,
        "non_2xx": measured.non_2xx,
        "socket_errors": measured.socket_errors,
        "measured": measured.to_json(),
        "warmup": warmup.to_json(),
        "cpu": cpu,
    }


def measure_http(runner: Runner, work_dir: Path) -> dict[str, Any]:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "strongroom", "serve", "--port", str(port)]
    argv += ["--data-dir", str(work_dir / "gateway-data")]
    with server(
        argv,
        env=gateway_env(runner.api_key),
        log_path=work_dir / "gateway.log",
        probe_url=base_url + "/health",
        probe_status=200,
        cpu=runner.server_cpu,
    ) as process:
        auth = {"Authorization": f"Bearer {runner.api_key}"}
        card = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2040}
        token = httpx.post(base_url + "/v1/tokens", json=card, headers=auth).json()["token"]
        url = base_url + "/v1/transactions/evaluate"
        rows = {}
        for name, mode, rate, series in (
            ("token_max", "token", 0, 10),
            ("token_paced", "token", PACED_RATE, 20),
            ("new_card_max", "new", 0, 30),
        ):
            print(f"   risk: POST /v1/transactions/evaluate, {name} ...", flush=True)
            rows[name] = _http_row(runner, url, mode, token, rate, process.pid, series)
    return rows


def risk_targets(local: dict[str, Any], http: dict[str, Any]) -> list[TargetCheck]:
    core = local["memory_stores"]
    paced = http["token_paced"]
    best = max(
        local["gateway_stores"]["evaluations_per_s"], http["token_max"]["requests_2xx_per_s"]
    )
    return [
        TargetCheck(
            "p99 in process",
            f"< {P99_IN_PROCESS_MS:g} ms (RiskService.evaluate, default policy)",
            f"{core['latency_ms']['p99']:.3f} ms",
            core["latency_ms"]["p99"] < P99_IN_PROCESS_MS,
        ),
        TargetCheck(
            "p99 over HTTP at 1,000 evaluations/s",
            f"< {P99_HTTP_MS:g} ms",
            f"{paced['latency_ms']['p99']:.2f} ms at {paced['requests_2xx_per_s']:,.0f}/s",
            paced["latency_ms"]["p99"] < P99_HTTP_MS and paced["non_2xx"] == 0,
            caveat="paced with wrk delay(), not wrk2",
        ),
        TargetCheck(
            "evaluations/s per process",
            f">= {EVALUATIONS_PER_S:,}",
            f"{best:,.0f}/s (best of gateway in process and HTTP at 16 conns)",
            best >= EVALUATIONS_PER_S,
        ),
    ]


def _table(report: GroupReport) -> str:
    local = report.derived["in_process"]
    http = report.derived["http"]
    rows = [
        "| Scenario | Evaluations/s | p50 ms | p99 ms | Non-2xx | CPU µs/eval |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for name, label in (
        ("memory_stores", "in process, RiskService, memory stores"),
        ("gateway_stores", "in process, gateway service (SQLite stores, stream)"),
    ):
        row = local[name]
        rows.append(
            f"| {label} | {row['evaluations_per_s']:,.0f} | {row['latency_ms']['p50']:.3f} "
            f"| {row['latency_ms']['p99']:.3f} | 0 | n/a |"
        )
    for name, label in (
        ("token_max", f"HTTP, known token, {HTTP_CONNECTIONS} conns, max rate"),
        ("token_paced", f"HTTP, known token, paced at {PACED_RATE:,}/s"),
        ("new_card_max", f"HTTP, new card number each, {HTTP_CONNECTIONS} conns"),
    ):
        row = http[name]
        cpu = row["cpu"] or {}
        per = cpu.get("server_cpu_us_per_request")
        rows.append(
            f"| {label} | {row['requests_2xx_per_s']:,.0f} | {row['latency_ms']['p50']:.2f} "
            f"| {row['latency_ms']['p99']:.2f} | {row['non_2xx']} "
            f"| {'n/a' if per is None else f'{per:,.0f}'} |"
        )
    return "\n".join(rows)


def risk_summary(report: GroupReport) -> str:
    return f"{_table(report)}\n\n{target_table(report.targets)}"


def render_risk(report: GroupReport) -> str:
    s = report.settings
    lines = [
        f"Run {report.date_utc}. {machine_line(report)}",
        "",
        _table(report),
        "",
        target_table(report.targets),
        "",
        "### Method",
        "",
        f"- In process: one evaluation at a time for {IN_PROCESS_SECONDS:g} s after "
        f"{IN_PROCESS_WARMUP} warm-up calls, on the server's core with uvloop; "
        f"{CARDS:,} card tokens, 500 devices, 250 IPs and 50 merchants in rotation, a new "
        "transaction id each time, so velocity windows fill as in production. "
        "*Memory stores*: `RiskService` with the default policy on in-memory stores "
        "and counters. *Gateway service*: `open_gateway(...).risk` on a fresh SQLite "
        "data dir: the decision is stored in SQL and published on `risk.decisions`.",
        "- Over HTTP: `python -m strongroom serve` on a fresh data dir, access log on, "
        "rate limiters out of the way ("
        + ", ".join(f"`{name}`" for name in RATE_LIMIT_VARIABLES)
        + f" = {UNLIMITED_RATE}), `wrk -t1 -c{HTTP_CONNECTIONS}` with "
        f"`benchmarks/risk.lua`, {s['warmup_s']} s warm-up then {s['duration_s']} s "
        "measured per row. The paced row asks for 1,000 requests/s through wrk's "
        "`delay()` (16 ms between requests per connection); wrk2 is not installed, so "
        "its latencies are not corrected for coordinated omission. The new-card row "
        "sends a Luhn-valid number never sent before in every request: the gateway "
        "tokenizes it (seal, vault insert) before evaluating.",
    ]
    if report.notes:
        lines += ["", "### Notes", "", *(f"- {note}" for note in report.notes)]
    return "\n".join(lines)


@scenario_group("risk", render_risk, summary=risk_summary)
def risk_group(runner: Runner) -> GroupReport:
    """Risk evaluations in process and over HTTP."""
    started = time.perf_counter()
    work_dir = Path(tempfile.mkdtemp(prefix="risk-", dir=runner.work_dir))
    local = measure_in_process(runner, work_dir)
    http = measure_http(runner, work_dir)
    notes = []
    if runner.server_cpu is None:
        notes.append("Nothing was pinned (fewer than 2 CPUs or no taskset).")
    return GroupReport(
        name="risk",
        title="Risk evaluation",
        scenarios=[],
        targets=risk_targets(local, http),
        derived={
            "in_process": local,
            "http": http,
            "group_seconds": round(time.perf_counter() - started, 1),
            "run_id": uuid.uuid4().hex[:8],
        },
        settings={
            "warmup_s": runner.warmup_s,
            "duration_s": runner.duration_s,
            "server_cpu": runner.server_cpu,
            "load_cpu": runner.load_cpu,
            "http_connections": HTTP_CONNECTIONS,
            "paced_rate": PACED_RATE,
            "in_process_seconds": IN_PROCESS_SECONDS,
            "policy": "default",
            "load_generator": "wrk (no wrk2)",
            "rate_limits": dict.fromkeys(RATE_LIMIT_VARIABLES, UNLIMITED_RATE),
        },
        notes=notes,
        checks={
            "http_all_2xx": all(row["non_2xx"] == 0 for row in http.values()),
        },
    )
