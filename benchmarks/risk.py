"""The ``risk`` benchmark group: evaluations per second and latency, in process and over HTTP.

Run with ``python -m benchmarks.run --only risk`` (``make bench`` runs every group).

1. In process, on the server's core, uvloop as in the gateway, with 1, 16 and 64
   evaluations in flight: (a) ``RiskService.evaluate`` with the default policy on
   in-memory stores and counters, the core of a decision and the baseline; (b)
   the same through ``open_gateway``'s service, as the gateway runs it: the
   SQLite decision store (decisions group-committed with their ``risk.decisions``
   records) and policy store.
2. Over HTTP: ``python -m strongroom serve`` on a fresh data dir. As fast as the
   gateway answers, wrk with ``benchmarks/risk.lua`` at 16 and 64 connections
   (a known card token), and at 16 connections with a new card number in every
   request (tokenized first). At a fixed offered load of 1,000 evaluations/s,
   ``benchmarks/risk_pacer.py``: an open loop that sends each request when it is
   due and measures its latency from then, as wrk2 does (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import httpx
import uvloop

from benchmarks.run import (
    BENCH_DIR,
    RATE_LIMIT_VARIABLES,
    RESULT_PREFIX,
    ROOT,
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
HTTP_CONNECTIONS: Final = (16, 64)
NEW_CARD_CONNECTIONS: Final = 16
PACED_RATE: Final = 1000
PACED_CONNECTIONS: Final = 64
IN_PROCESS_SECONDS: Final = 4.0
IN_PROCESS_WARMUP: Final = 500
IN_PROCESS_MAX_OPS: Final = 200_000
IN_PROCESS_CONCURRENCY: Final = (1, 16, 64)
P99_IN_PROCESS_MS: Final = 2.0
P99_HTTP_MS: Final = 15.0
EVALUATIONS_PER_S: Final = 3000
CARDS: Final = 1000
STORES: Final = ("memory_stores", "gateway_stores")


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


async def _time_evaluations(
    risk: RiskService, tenant: str, concurrency: int, first: int
) -> dict[str, Any]:
    """``concurrency`` callers evaluating in a closed loop for ``IN_PROCESS_SECONDS``."""
    for n in range(IN_PROCESS_WARMUP):
        await risk.evaluate(tenant, _request(first - 1 - n), time.time())
    latencies: list[float] = []
    counter = iter(range(first, first + IN_PROCESS_MAX_OPS))
    cpu = time.process_time()
    started = time.perf_counter()
    deadline = started + IN_PROCESS_SECONDS

    async def caller() -> None:
        for n in counter:
            if time.perf_counter() > deadline:
                return
            begin = time.perf_counter()
            await risk.evaluate(tenant, _request(n), time.time())
            latencies.append(time.perf_counter() - begin)

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu
    count = len(latencies)
    return {
        "concurrency": concurrency,
        "evaluations": count,
        "seconds": round(wall, 3),
        "evaluations_per_s": round(count / wall, 1),
        "latency_ms": _latency_ms(latencies),
        # Every thread of the process (the SQLite writer's commits included).
        "cpu_us_per_evaluation": round(1e6 * cpu / count, 1) if count else None,
    }


def _memory_service() -> RiskService:
    return RiskService(
        policies=MemoryPolicyStore(),
        decisions=MemoryDecisionStore(),
        velocity=MemoryVelocityCounter(),
        seen_cards=MemorySeenCards(),
        hash_ip=lambda ip: ip,
    )


async def _memory_rows() -> list[dict[str, Any]]:
    rows = []
    for index, concurrency in enumerate(IN_PROCESS_CONCURRENCY):
        # A fresh service per row, so no row inherits another's counters.
        rows.append(await _time_evaluations(_memory_service(), "bench", concurrency, index << 24))
    return rows


async def _gateway_rows(data_dir: Path) -> list[dict[str, Any]]:
    rows = []
    for index, concurrency in enumerate(IN_PROCESS_CONCURRENCY):
        state = await open_gateway(
            isolated_settings(data_dir / f"c{concurrency}"),
            Metrics(),
            get_logger("bench"),
            migrate=True,
        )
        try:
            rows.append(
                await _time_evaluations(state.risk, DEFAULT_TENANT_ID, concurrency, index << 24)
            )
        finally:
            await state.aclose()
    return rows


def measure_in_process(runner: Runner, work_dir: Path) -> dict[str, Any]:
    with pinned_here(runner.server_cpu):
        memory = uvloop.run(_memory_rows())
        gateway = uvloop.run(_gateway_rows(work_dir / "in-process-data"))
    return {"memory_stores": memory, "gateway_stores": gateway}


def wrk_evaluate(
    runner: Runner,
    url: str,
    mode: str,
    token: str,
    seconds: int,
    series: int,
    connections: int,
) -> WrkRun:
    argv = pinned(
        runner.load_cpu,
        [
            tool("wrk"), "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
            "--timeout", "10s", "-s", str(RISK_SCRIPT), url, "--",
            str(series), mode, str(time.gmtime().tm_year + 3), token, "0", str(connections),
        ],
    )  # fmt: skip
    env = {**os.environ, "BENCH_API_KEY": runner.api_key}
    done = subprocess.run(
        argv, capture_output=True, text=True, env=env, timeout=seconds + 60, check=False
    )
    if done.returncode != 0:
        raise HarnessError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return WrkRun.parse(done.stdout)


def pace_evaluate(
    runner: Runner, url: str, token: str, seconds: int, series: int
) -> dict[str, Any]:
    """The constant-rate pacer, on the load generator's core; its JSON result."""
    argv = pinned(
        runner.load_cpu,
        [
            sys.executable, "-m", "benchmarks.risk_pacer", url, token, str(PACED_RATE),
            str(seconds), str(PACED_CONNECTIONS), str(series),
        ],
    )  # fmt: skip
    env = {**os.environ, "BENCH_API_KEY": runner.api_key}
    done = subprocess.run(
        argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=seconds + 60,
        check=False,
    )  # fmt: skip
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            result: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
            return result
    raise HarnessError(f"the pacer failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


def _cpu_around(
    runner: Runner, pid: int, measure: Callable[[], tuple[Any, float, int]]
) -> tuple[Any, dict[str, Any] | None]:
    before = CpuSample.take(pid, runner.server_cpu)
    children_before = _children_cpu_s()
    result, duration, requests = measure()
    load_cpu_s = _children_cpu_s() - children_before
    after = CpuSample.take(pid, runner.server_cpu)
    cpu = cpu_usage(before, after, duration, requests, runner.server_cpu is not None)
    if cpu is not None and duration > 0:
        cpu["load_generator_cpu_percent"] = round(100 * load_cpu_s / duration, 1)
    return result, cpu


def _wrk_row(
    runner: Runner, url: str, mode: str, token: str, pid: int, series: int, connections: int
) -> dict[str, Any]:
    warmup = wrk_evaluate(runner, url, mode, token, runner.warmup_s, series, connections)

    def measure() -> tuple[WrkRun, float, int]:
        run = wrk_evaluate(runner, url, mode, token, runner.duration_s, series + 1, connections)
        return run, run.duration_s, run.requests

    measured, cpu = _cpu_around(runner, pid, measure)
    return {
        "card": mode,
        "rate": "max",
        "connections": connections,
        "load_generator": "wrk",
        "requests_per_s": round(measured.requests_per_s, 1),
        "requests_2xx_per_s": round(measured.ok_per_s, 1),
        "latency_ms": measured.latency_ms,
        "non_2xx": measured.non_2xx,
        "socket_errors": measured.socket_errors,
        "measured": measured.to_json(),
        "warmup": warmup.to_json(),
        "cpu": cpu,
    }


def _paced_row(runner: Runner, url: str, token: str, pid: int, series: int) -> dict[str, Any]:
    warmup = pace_evaluate(runner, url, token, runner.warmup_s, series)

    def measure() -> tuple[dict[str, Any], float, int]:
        run = pace_evaluate(runner, url, token, runner.duration_s, series + 1)
        return run, run["wall_seconds"], run["answered"]

    measured, cpu = _cpu_around(runner, pid, measure)
    return {
        "card": "token",
        "rate": PACED_RATE,
        "connections": PACED_CONNECTIONS,
        "load_generator": "benchmarks/risk_pacer.py (open loop, latency from the due time)",
        "requests_per_s": measured["requests_2xx_per_s"],
        "requests_2xx_per_s": measured["requests_2xx_per_s"],
        "latency_ms": measured["latency_ms"],
        # Answered but refused; requests never answered are ``timed_out`` in ``measured``.
        "non_2xx": measured["answered"] - measured["requests_2xx"],
        "socket_errors": measured["socket_errors"],
        "measured": measured,
        "warmup": warmup,
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
        rows: dict[str, Any] = {}
        series = 10
        for connections in HTTP_CONNECTIONS:
            name = f"token_max_c{connections}"
            print(f"   risk: POST /v1/transactions/evaluate, {name} ...", flush=True)
            rows[name] = _wrk_row(runner, url, "token", token, process.pid, series, connections)
            series += 10
        print(f"   risk: POST /v1/transactions/evaluate, {PACED_RATE}/s ...", flush=True)
        rows["token_paced"] = _paced_row(runner, url, token, process.pid, series)
        series += 10
        print("   risk: POST /v1/transactions/evaluate, new_card_max ...", flush=True)
        rows["new_card_max"] = _wrk_row(
            runner, url, "new", token, process.pid, series, NEW_CARD_CONNECTIONS
        )
    return rows


def _best(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return max(rows, key=lambda row: row["evaluations_per_s"])


def _sequential(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return next(row for row in rows if row["concurrency"] == 1)


def ratios(local: dict[str, Any], http: dict[str, Any]) -> dict[str, Any]:
    """Each figure over the memory-store baseline at the same concurrency (or its best)."""
    memory = {row["concurrency"]: row for row in local["memory_stores"]}
    baseline = _best(local["memory_stores"])["evaluations_per_s"]
    out: dict[str, Any] = {}
    for row in local["gateway_stores"]:
        same = memory[row["concurrency"]]
        out[f"gateway_in_process_c{row['concurrency']}"] = round(
            row["evaluations_per_s"] / same["evaluations_per_s"], 3
        )
        if row["cpu_us_per_evaluation"] and same["cpu_us_per_evaluation"]:
            out[f"gateway_in_process_c{row['concurrency']}_by_cpu"] = round(
                same["cpu_us_per_evaluation"] / row["cpu_us_per_evaluation"], 3
            )
    for name, row in http.items():
        out[f"http_{name}"] = round(row["requests_2xx_per_s"] / baseline, 3)
    return out


def risk_targets(local: dict[str, Any], http: dict[str, Any]) -> list[TargetCheck]:
    core = _sequential(local["memory_stores"])
    paced = http["token_paced"]
    gateway = _best(local["gateway_stores"])
    best_http = max(
        (row for name, row in http.items() if name.startswith("token_max")),
        key=lambda row: row["requests_2xx_per_s"],
    )
    best = max(gateway["evaluations_per_s"], best_http["requests_2xx_per_s"])
    measured = paced["measured"]
    return [
        TargetCheck(
            "p99 in process",
            f"< {P99_IN_PROCESS_MS:g} ms (RiskService.evaluate, default policy, memory stores)",
            f"{core['latency_ms']['p99']:.3f} ms",
            core["latency_ms"]["p99"] < P99_IN_PROCESS_MS,
        ),
        TargetCheck(
            "p99 over HTTP at 1,000 evaluations/s",
            f"< {P99_HTTP_MS:g} ms, every request answered 2xx",
            f"{paced['latency_ms']['p99']:.2f} ms at {paced['requests_2xx_per_s']:,.0f}/s "
            f"({measured['requests_2xx']:,} of {measured['requests']:,} 2xx, "
            f"{measured['timed_out']:,} unanswered)",
            paced["latency_ms"]["p99"] < P99_HTTP_MS
            and measured["requests_2xx"] == measured["requests"],
        ),
        TargetCheck(
            "evaluations/s per process",
            f">= {EVALUATIONS_PER_S:,} with the gateway's stores",
            f"{best:,.0f}/s (best of the gateway service in process, "
            f"{gateway['evaluations_per_s']:,.0f}/s at {gateway['concurrency']} in flight, "
            f"and HTTP, {best_http['requests_2xx_per_s']:,.0f}/s at "
            f"{best_http['connections']} connections)",
            best >= EVALUATIONS_PER_S,
        ),
    ]


def _in_process_table(local: dict[str, Any]) -> str:
    memory = {row["concurrency"]: row for row in local["memory_stores"]}
    rows = [
        "| In process | In flight | Evaluations/s | p50 ms | p99 ms | CPU µs/eval "
        "| vs memory stores (evaluations/s) | vs memory stores (by CPU) |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name, label in (
        ("memory_stores", "RiskService, memory stores (baseline)"),
        ("gateway_stores", "gateway service, SQLite stores, stream in the commit"),
    ):
        for row in local[name]:
            baseline = memory[row["concurrency"]]
            ratio = row["evaluations_per_s"] / baseline["evaluations_per_s"]
            cpu = row["cpu_us_per_evaluation"]
            by_cpu = (
                f"{baseline['cpu_us_per_evaluation'] / cpu:.0%}"
                if cpu and baseline["cpu_us_per_evaluation"]
                else "n/a"
            )
            rows.append(
                f"| {label} | {row['concurrency']} | {row['evaluations_per_s']:,.0f} "
                f"| {row['latency_ms']['p50']:.3f} | {row['latency_ms']['p99']:.3f} "
                f"| {'n/a' if cpu is None else f'{cpu:,.0f}'} | {ratio:.0%} | {by_cpu} |"
            )
    return "\n".join(rows)


def _http_table(local: dict[str, Any], http: dict[str, Any]) -> str:
    baseline = _best(local["memory_stores"])["evaluations_per_s"]
    rows = [
        "| Over HTTP | Load | Evaluations/s (2xx) | p50 ms | p99 ms | Non-2xx "
        "| Server CPU µs/eval | vs memory stores (best) |",
        "|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    labels = {
        "token_max_c16": ("known token, as fast as answered", "wrk, 16 conns"),
        "token_max_c64": ("known token, as fast as answered", "wrk, 64 conns"),
        "token_paced": (
            "known token, constant rate",
            f"{PACED_RATE:,}/s offered, open loop, up to {PACED_CONNECTIONS} conns",
        ),
        "new_card_max": ("new card number each (tokenized)", f"wrk, {NEW_CARD_CONNECTIONS} conns"),
    }
    for name, (label, load) in labels.items():
        row = http[name]
        per = (row["cpu"] or {}).get("server_cpu_us_per_request")
        rows.append(
            f"| {label} | {load} | {row['requests_2xx_per_s']:,.0f} "
            f"| {row['latency_ms']['p50']:.2f} | {row['latency_ms']['p99']:.2f} "
            f"| {row['non_2xx']} | {'n/a' if per is None else f'{per:,.0f}'} "
            f"| {row['requests_2xx_per_s'] / baseline:.0%} |"
        )
    return "\n".join(rows)


def _tables(report: GroupReport) -> str:
    local = report.derived["in_process"]
    http = report.derived["http"]
    return f"{_in_process_table(local)}\n\n{_http_table(local, http)}"


def risk_summary(report: GroupReport) -> str:
    return f"{_tables(report)}\n\n{target_table(report.targets)}"


#: The same figures before decisions shared commits (the previous run of this group).
BEFORE: Final = (
    "Before decisions shared commits (run 2026-11-22 21:17 UTC, same machine, one "
    "evaluation at a time in process, wrk at 16 connections): 5,094 evaluations/s in "
    "process on memory stores, 226/s with the gateway's SQLite stores (every decision its "
    "own commit), 150/s over HTTP with a known token, p99 2,106 ms at a paced 1,000/s "
    "(wrk `delay()`, 124/s achieved)."
)


def _readings(report: GroupReport) -> list[str]:
    """What the figures say, worked out from them: where the CPU of an evaluation goes."""
    local = report.derived["in_process"]
    http = report.derived["http"]
    gateway = _best(local["gateway_stores"])
    memory = next(
        row for row in local["memory_stores"] if row["concurrency"] == gateway["concurrency"]
    )
    lines = []
    gateway_cpu, memory_cpu = gateway["cpu_us_per_evaluation"], memory["cpu_us_per_evaluation"]
    if gateway_cpu and memory_cpu:
        lines.append(
            f"In process, at {gateway['concurrency']} in flight, the gateway's stores cost "
            f"{gateway_cpu - memory_cpu:,.0f} CPU µs per evaluation over the memory stores "
            f"({gateway_cpu:,.0f} against {memory_cpu:,.0f}): the idempotency lookup, two "
            "JSON documents (stored decision, stream record), the SQLite writer's inserts and "
            "its share of each commit's fsync. One core at that cost allows about "
            f"{1e6 / gateway_cpu:,.0f} evaluations/s."
        )
    sequential = _sequential(local["gateway_stores"])
    lines.append(
        f"One evaluation at a time waits for its own commit (p50 "
        f"{sequential['latency_ms']['p50']:.2f} ms) and pays for that commit alone "
        f"({sequential['cpu_us_per_evaluation'] or 0:,.0f} CPU µs per evaluation, most of it "
        "the fsync in the kernel). With evaluations in flight, commits are shared and their "
        "cost is spread over them."
    )
    for name, row in http.items():
        per = (row["cpu"] or {}).get("server_cpu_us_per_request")
        other = (row["cpu"] or {}).get("other_on_core_percent")
        if per:
            lines.append(
                f"HTTP {name}: {per:,.0f} server CPU µs per request, so one uncontended core "
                f"allows about {1e6 / per:,.0f}/s"
                + (f"; other processes took {other:.0f}% of the server's core" if other else "")
                + "."
            )
    paced = (http["token_paced"]["cpu"] or {}).get("server_cpu_us_per_request")
    if paced and gateway_cpu:
        lines.append(
            f"Over HTTP, about {paced - gateway_cpu:,.0f} of the {paced:,.0f} CPU µs of a "
            "request are spent outside the decision and its storage (the HTTP server, the "
            "request pipeline with its access log, authentication and rate limits, body "
            f"screening and validation): {PACED_RATE:,} requests/s ask for "
            f"{PACED_RATE * paced / 1e4:,.0f}% of one core, so at that rate requests queue "
            "and the constant-rate latency is mostly the queue."
        )
    return lines


def render_risk(report: GroupReport) -> str:
    s = report.settings
    lines = [
        "## Risk evaluation",
        "",
        "<!-- Generated by `python -m benchmarks.run --only risk`; edits here are overwritten. -->",
        "",
        f"Measured {report.date_utc} on: {machine_line(report)}",
        "",
        _tables(report),
        "",
        target_table(report.targets),
        "",
        "### Reading the figures",
        "",
        *(f"- {line}" for line in _readings(report)),
        f"- {BEFORE}",
        "",
        "### Reproduce",
        "",
        "```sh",
        ".venv/bin/python -m benchmarks.run --only risk",
        "```",
        "",
        "Full figures (warm-up runs, status counts, CPU, ratios) are in "
        "`benchmarks/results/latest.json` under `groups.risk`.",
        "",
        "### Method",
        "",
        f"- In process: for each row, {IN_PROCESS_WARMUP} warm-up calls, then "
        f"{IN_PROCESS_SECONDS:g} s with that many evaluations in flight (a closed loop), "
        "on the server's core with uvloop; "
        f"{CARDS:,} card tokens, 500 devices, 250 IPs and 50 merchants in rotation, a new "
        "transaction id each time, so velocity windows fill as in production. "
        "*Memory stores*: `RiskService` with the default policy on in-memory stores "
        "and counters, the baseline. *Gateway service*: `open_gateway(...).risk` on a "
        "fresh SQLite data dir per row: each decision is committed with its "
        "`risk.decisions` record before `evaluate` returns, decisions in flight "
        "sharing commits. *CPU µs/eval* is the process's CPU time (every thread, the "
        "SQLite writer's included) per evaluation; other work on the machine barely "
        "changes it, so the ratio to the memory stores is also given by it (memory "
        "stores' CPU per evaluation over the gateway's).",
        "- Over HTTP: `python -m strongroom serve` on a fresh data dir, access log on, "
        "rate limiters out of the way ("
        + ", ".join(f"`{name}`" for name in RATE_LIMIT_VARIABLES)
        + f" = {UNLIMITED_RATE}), {s['warmup_s']} s warm-up then {s['duration_s']} s "
        "measured per row, server and load generator on their own cores. *As fast as "
        "answered*: `wrk -t1` with `benchmarks/risk.lua` (a closed loop). *Constant rate*: "
        f"`benchmarks/risk_pacer.py` sends request i at start + i/{PACED_RATE:,} s "
        "whether earlier ones were answered or not, and measures each latency from that "
        "due time, as wrk2 does, so a stall is charged to every request it delayed; "
        "requests unanswered 10 s after the last is due count as timed out. The "
        "new-card row sends a Luhn-valid number never sent before in every request: the "
        "gateway tokenizes it (seal, vault insert) before evaluating. *vs memory stores*: "
        "2xx evaluations/s over the best in-process memory-store figure.",
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
            "ratios_vs_memory_stores": ratios(local, http),
            "group_seconds": round(time.perf_counter() - started, 1),
            "run_id": uuid.uuid4().hex[:8],
        },
        settings={
            "warmup_s": runner.warmup_s,
            "duration_s": runner.duration_s,
            "server_cpu": runner.server_cpu,
            "load_cpu": runner.load_cpu,
            "http_connections": list(HTTP_CONNECTIONS),
            "paced_rate": PACED_RATE,
            "paced_connections": PACED_CONNECTIONS,
            "in_process_seconds": IN_PROCESS_SECONDS,
            "in_process_concurrency": list(IN_PROCESS_CONCURRENCY),
            "policy": "default",
            "load_generators": "wrk (closed loop), benchmarks/risk_pacer.py (constant rate)",
            "rate_limits": dict.fromkeys(RATE_LIMIT_VARIABLES, UNLIMITED_RATE),
        },
        notes=notes,
        checks={
            "http_all_2xx": all(row["non_2xx"] == 0 for row in http.values()),
        },
    )
