"""Benchmark harness: ``python -m benchmarks.run [--only GROUP ...]`` (``make bench``).

Each scenario group is a function registered with ``@scenario_group``; it starts
the servers it needs, drives them with ``wrk`` and returns a ``GroupReport``. The
harness then merges every report into ``benchmarks/results/latest.json`` and
regenerates that group's section of ``docs/benchmarks.md`` between its markers,
leaving the rest of the document (and other groups' sections) as they were.

Groups: ``ingest`` (single events and batches against a bare-endpoint baseline),
``keys`` (managed vs configured API keys on one gateway, alternating rounds),
``audit`` (the audit trail in-process, no HTTP: append rates, a million-record
log, ``verify`` and Merkle proofs), ``risk`` (in ``benchmarks/risk.py``: evaluations
in process and over HTTP) and ``vault`` (in ``benchmarks/vault.py``: the
seal recipe against OpenBao Transit, tokenizing in process and over HTTP). A
group whose figures are not one wrk run per row passes ``summary=`` to print its
own tables, and may add pass/fail ``checks`` to its report; a failed check fails
the run like a failed durability check.

Method, and why:

* Server on core 0, ``wrk`` on core 1 (``taskset``), so the load generator never
  steals CPU from the process being measured on a 2-core machine.
* Every request carries new event ids (``benchmarks/ingest.lua``): a repeated id
  is answered as a duplicate without a write, which would flatter the figures.
* Each wrk run has a short warm-up run first, then the measured run.
* Results come from a Lua ``done()`` hook printing one JSON line rather than from
  scraping wrk's human-readable output.
* Every process started here is stopped in a ``finally``, even on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import math
import os
import platform
import random
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, Final

import httpx
from prometheus_client.parser import text_string_to_metric_families

from strongroom.api.state import GatewayState, open_gateway
from strongroom.config import Settings
from strongroom.domain.audit import AuditEntry, AuditRecord
from strongroom.observability.logging import get_logger
from strongroom.observability.metrics import Metrics

ROOT: Final = Path(__file__).resolve().parent.parent
BENCH_DIR: Final = ROOT / "benchmarks"
RESULTS_PATH: Final = BENCH_DIR / "results" / "latest.json"
DOC_PATH: Final = ROOT / "docs" / "benchmarks.md"
INGEST_SCRIPT: Final = BENCH_DIR / "ingest.lua"

# High enough that the per-key and per-tenant limiters never refuse: the ingest
# scenarios measure ingest, not the limiters (which still run on every request).
UNLIMITED_RATE: Final = "10000000"
RATE_LIMIT_VARIABLES: Final = (
    "STRONGROOM_RATELIMIT_RPS",
    "STRONGROOM_RATELIMIT_BURST",
    "STRONGROOM_TENANT_RATELIMIT_RPS",
    "STRONGROOM_TENANT_RATELIMIT_BURST",
)
STARTUP_TIMEOUT_S: Final = 30.0
STOP_TIMEOUT_S: Final = 15.0
RESULT_PREFIX: Final = "BENCH_RESULT "
TOKENIZED_TOPIC: Final = "payments.tokenized"
EVENTS_ROUTE: Final = "/v1/events"


class HarnessError(RuntimeError):
    """The benchmark could not be run (missing tool, server failed to start, ...)."""


# --------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory_total_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / (1024 * 1024), 1)
    return None


def _filesystem_of(path: Path) -> str:
    """The filesystem type under ``path``: a tmpfs data dir would make fsync free."""
    best, kind = "", "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            mounted_on = parts[1] if len(parts) >= 3 else ""
            if mounted_on and path.is_relative_to(mounted_on) and len(mounted_on) > len(best):
                best, kind = mounted_on, parts[2]
    return kind


def tool(name: str) -> str:
    """The absolute path of an executable, so no PATH lookup happens at spawn time."""
    path = shutil.which(name)
    if path is None:
        raise HarnessError(f"{name} is required (apt-get install -y {name})")
    return path


def _command_output(argv: Sequence[str]) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError, IndexError):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        return (done.stdout or done.stderr).strip().splitlines()[0]
    return "unknown"


def _source_state() -> dict[str, Any]:
    """Which code was measured: the commit, whether tracked files differ from it, and
    where ``strongroom`` is imported from (``PYTHONPATH`` can point elsewhere).

    ``git diff-index`` is used because, unlike ``git status``, it never writes the index.
    """
    spec = importlib.util.find_spec("strongroom")
    modified: bool | None = None
    commit = "unknown"
    with contextlib.suppress(HarnessError, OSError, subprocess.SubprocessError):
        git = tool("git")
        commit = _command_output([git, "-C", str(ROOT), "rev-parse", "HEAD"])
        done = subprocess.run(
            [git, "-C", str(ROOT), "diff-index", "--quiet", "HEAD", "--"],
            capture_output=True,
            timeout=10,
            check=False,
        )
        modified = {0: False, 1: True}.get(done.returncode)
    return {
        "git_commit": commit,
        "git_tracked_files_modified": modified,
        "strongroom_imported_from": str(Path(spec.origin).parent) if spec and spec.origin else None,
    }


def machine_info(data_root: Path) -> dict[str, Any]:
    """What a reader needs to judge the figures: they only mean something on this machine."""
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_total_gib(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk": _command_output([tool("wrk"), "-v"]).split(" Copyright")[0],
        "data_dir_filesystem": _filesystem_of(data_root),
        **_source_state(),
    }


def load_average() -> list[float]:
    """1/5/15-minute load: other work on the same cores lowers every figure."""
    return [round(value, 2) for value in os.getloadavg()]


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    """A port free right now; the race with other processes is acceptable here."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(cpu: str | None, argv: Sequence[str]) -> list[str]:
    """``argv`` under ``taskset -c cpu``; unpinned when the machine has one core."""
    return [tool("taskset"), "-c", cpu, *argv] if cpu is not None else list(argv)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after ``STOP_TIMEOUT_S``: never leave a server behind."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def _tail(path: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


@contextlib.contextmanager
def server(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    log_path: Path,
    probe_url: str,
    probe_status: int,
    cpu: str | None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server pinned to ``cpu``, wait for ``probe_url`` to answer ``probe_status``.

    The server is stopped when the block exits, however it exits.

    Output goes to ``log_path`` (the gateway's access log included), not a pipe,
    so a full pipe can never stall the server mid-benchmark.
    """
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            pinned(cpu, argv), stdout=log, stderr=subprocess.STDOUT, env=dict(env), cwd=ROOT
        )
        try:
            deadline = time.monotonic() + STARTUP_TIMEOUT_S
            while True:
                if process.poll() is not None:
                    raise HarnessError(f"server exited early:\n{_tail(log_path)}")
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(probe_url, timeout=1).status_code == probe_status:
                        break
                if time.monotonic() > deadline:
                    raise HarnessError(f"server did not answer {probe_url}:\n{_tail(log_path)}")
                time.sleep(0.1)
            yield process
        finally:
            stop_process(process)


# --------------------------------------------------------------------------- cpu


@dataclass(frozen=True)
class CpuSample:
    """A server's CPU time and its core's counters at one instant (clock ticks)."""

    process_ticks: int
    core_busy_ticks: int
    core_steal_ticks: int
    core_total_ticks: int

    @classmethod
    def take(cls, pid: int, cpu: str | None) -> CpuSample | None:
        """None when /proc cannot tell us (not Linux, or the process is gone)."""
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            process = int(fields[11]) + int(fields[12])  # utime + stime, all threads
            core = f"cpu{cpu}" if cpu is not None else "cpu"
            for line in Path("/proc/stat").read_text().splitlines():
                name, *values = line.split()
                if name == core:
                    user, nice, system, idle, iowait, irq, softirq, steal = map(int, values[:8])
                    busy = user + nice + system + irq + softirq
                    return cls(process, busy, steal, busy + idle + iowait + steal)
        except (OSError, ValueError, IndexError):
            return None
        return None


def _children_cpu_s() -> float:
    """CPU seconds of reaped children: around one ``subprocess.run``, that child's use."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_usage(
    before: CpuSample | None, after: CpuSample | None, wall_s: float, requests: int, pinned: bool
) -> dict[str, Any] | None:
    """How busy the server was, and what else ran on its core, during the measured run.

    On a shared 2-core machine this is what makes the figures readable: a server
    that is the bottleneck but shows well under 100 % CPU was either waiting (on
    fsync, say) or losing its core to other processes; ``other_on_core`` tells which.
    CPU per request barely depends on such contention, so it is reported too.
    """
    if before is None or after is None or wall_s <= 0:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    process_s = (after.process_ticks - before.process_ticks) / ticks
    usage: dict[str, Any] = {
        "server_cpu_percent": round(100 * process_s / wall_s, 1),
        "server_cpu_us_per_request": round(1e6 * process_s / requests, 1) if requests else None,
        # What one core to itself would allow at this cost, if the server stayed
        # CPU-bound: separates "the machine was busy" from "the server is too slow".
        "one_core_ceiling_requests_per_s": (
            round(requests / process_s) if requests and process_s > 0 else None
        ),
    }
    core_total = after.core_total_ticks - before.core_total_ticks
    if pinned and core_total > 0:
        busy = after.core_busy_ticks - before.core_busy_ticks
        usage["core_busy_percent"] = round(100 * busy / core_total, 1)
        usage["other_on_core_percent"] = round(
            max(0.0, 100 * busy / core_total - usage["server_cpu_percent"]), 1
        )
        usage["core_steal_percent"] = round(
            100 * (after.core_steal_ticks - before.core_steal_ticks) / core_total, 1
        )
    return usage


# --------------------------------------------------------------------------- wrk


@dataclass(frozen=True)
class WrkRun:
    """One wrk invocation's figures, as printed by the script's ``done()`` hook."""

    duration_s: float
    requests: int
    sent: int
    statuses: dict[int, int]
    errors: dict[str, int]
    latency_ms: dict[str, float]

    @classmethod
    def parse(cls, output: str) -> WrkRun:
        for line in output.splitlines():
            if line.startswith(RESULT_PREFIX):
                data = json.loads(line[len(RESULT_PREFIX) :])
                return cls(
                    duration_s=data["duration_us"] / 1e6,
                    requests=data["requests"],
                    sent=data["sent"],
                    statuses={int(code): count for code, count in data["statuses"].items()},
                    errors=data["errors"],
                    latency_ms=data["latency_ms"],
                )
        raise HarnessError(f"wrk printed no {RESULT_PREFIX.strip()} line:\n{output}")

    def count(self, status: int) -> int:
        return self.statuses.get(status, 0)

    @property
    def ok(self) -> int:
        """2xx responses: only these count towards throughput."""
        return sum(count for code, count in self.statuses.items() if 200 <= code < 300)

    @property
    def non_2xx(self) -> int:
        return self.requests - self.ok

    @property
    def abandoned(self) -> int:
        """Requests sent whose response wrk never read: in flight when it stopped."""
        return self.sent - sum(self.statuses.values())

    @property
    def socket_errors(self) -> int:
        return sum(self.errors[kind] for kind in ("connect", "read", "write", "timeout"))

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def ok_per_s(self) -> float:
        return self.ok / self.duration_s if self.duration_s else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "duration_s": round(self.duration_s, 3),
            "requests": self.requests,
            "requests_2xx": self.ok,
            "requests_sent": self.sent,
            "requests_abandoned_in_flight": self.abandoned,
            "requests_per_s": round(self.requests_per_s, 1),
            "statuses": {str(code): count for code, count in sorted(self.statuses.items())},
            "non_2xx": self.non_2xx,
            "socket_errors": self.errors,
            "latency_ms": self.latency_ms,
        }


@dataclass(frozen=True)
class Load:
    """How to drive one scenario: wrk's connection count and the body shape."""

    connections: int
    events_per_request: int  # 0 means one bare event object, not a batch

    @property
    def events_per_ok(self) -> int:
        return max(1, self.events_per_request)


class Runner:
    """Shared settings and helpers that every scenario group uses."""

    def __init__(self, *, warmup_s: int, duration_s: int, work_dir: Path) -> None:
        self.warmup_s = warmup_s
        self.duration_s = duration_s
        self.work_dir = work_dir
        self.api_key = "bench-" + secrets.token_hex(16)
        self._nonces: set[str] = set()
        # The first two CPUs we may run on (0 and 1 on the reference machine); with
        # fewer, or no taskset, nothing is pinned and the results say so.
        cpus = sorted(os.sched_getaffinity(0))
        can_pin = len(cpus) >= 2 and shutil.which("taskset") is not None
        self.server_cpu: str | None = str(cpus[0]) if can_pin else None
        self.load_cpu: str | None = str(cpus[1]) if can_pin else None

    def _nonce(self) -> str:
        """Eight hex digits, never reused in this run, so no two wrk runs share an id."""
        while True:
            nonce = secrets.token_hex(4)
            if nonce not in self._nonces:
                self._nonces.add(nonce)
                return nonce

    def wrk(self, url: str, load: Load, seconds: int, api_key: str | None = None) -> WrkRun:
        """One wrk run with the ingest script; the key reaches Lua through the environment.

        ``api_key`` defaults to the configured key every gateway here is started with.
        """
        argv = pinned(
            self.load_cpu,
            [
                tool("wrk"),
                "-t1",
                f"-c{load.connections}",
                f"-d{seconds}s",
                "--latency",
                "--timeout",
                "10s",
                "-s",
                str(INGEST_SCRIPT),
                url,
                "--",
                self._nonce(),
                str(load.events_per_request),
            ],
        )
        env = {**os.environ, "BENCH_API_KEY": api_key or self.api_key}
        done = subprocess.run(
            argv, capture_output=True, text=True, env=env, timeout=seconds + 60, check=False
        )
        if done.returncode != 0:
            raise HarnessError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return WrkRun.parse(done.stdout)

    def warm_and_measure(
        self, url: str, load: Load, server_pid: int, api_key: str | None = None
    ) -> tuple[WrkRun, WrkRun, dict[str, Any] | None]:
        """Warm-up run, then the measured run with the server's CPU use around it."""
        warmup = self.wrk(url, load, self.warmup_s, api_key)
        before = CpuSample.take(server_pid, self.server_cpu)
        children_before = _children_cpu_s()
        measured = self.wrk(url, load, self.duration_s, api_key)
        wrk_cpu_s = _children_cpu_s() - children_before
        after = CpuSample.take(server_pid, self.server_cpu)
        pinned = self.server_cpu is not None
        cpu = cpu_usage(before, after, measured.duration_s, measured.requests, pinned)
        if cpu is not None and measured.duration_s > 0:
            # Near 100 % would mean wrk, not the server, set the pace.
            cpu["load_generator_cpu_percent"] = round(100 * wrk_cpu_s / measured.duration_s, 1)
        return warmup, measured, cpu


# --------------------------------------------------------------------------- reports


@dataclass(frozen=True)
class ScenarioResult:
    """A measured scenario: what was sent, to which server, and what came back."""

    name: str
    server: str
    load: Load
    warmup: WrkRun
    measured: WrkRun
    cpu: dict[str, Any] | None
    durability: dict[str, Any] | None = None

    @property
    def events_per_s(self) -> float:
        """Events in 2xx responses per second: refused or failed requests add nothing."""
        return self.measured.ok_per_s * self.load.events_per_ok

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "server": self.server,
            "connections": self.load.connections,
            "wrk_threads": 1,
            "events_per_request": self.load.events_per_ok,
            "batch": self.load.events_per_request > 0,
            "requests_per_s": round(self.measured.requests_per_s, 1),
            "requests_2xx_per_s": round(self.measured.ok_per_s, 1),
            "events_per_s": round(self.events_per_s, 1),
            "latency_p50_ms": self.measured.latency_ms["p50"],
            "latency_p99_ms": self.measured.latency_ms["p99"],
            "non_2xx": self.measured.non_2xx,
            "socket_errors": self.measured.socket_errors,
            "measured": self.measured.to_json(),
            "warmup": self.warmup.to_json(),
            "cpu": self.cpu,
            "durability": self.durability,
        }


@dataclass(frozen=True)
class TargetCheck:
    """One performance target, the figure it was judged on, and the verdict."""

    name: str
    requirement: str
    measured: str
    passed: bool
    caveat: str | None = None  # why the verdict may not hold on an uncontended machine

    @property
    def verdict(self) -> str:
        text = "pass" if self.passed else "**FAIL**"
        return f"{text} ({self.caveat})" if self.caveat else text

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "requirement": self.requirement,
            "measured": self.measured,
            "passed": self.passed,
            "caveat": self.caveat,
        }


@dataclass
class GroupReport:
    """What a scenario group hands back: JSON for latest.json and its doc section."""

    name: str
    title: str
    scenarios: list[ScenarioResult]
    targets: list[TargetCheck]
    settings: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    derived: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    load_before: list[float] = field(default_factory=list)
    load_after: list[float] = field(default_factory=list)
    date_utc: str = ""
    # Pass/fail checks that are not one scenario's: a durability check over several
    # wrk runs against one gateway, or the audit log verifying. Failing one fails the run.
    checks: dict[str, bool] = field(default_factory=dict)

    @property
    def durable(self) -> bool:
        scenarios = (s.durability is None or s.durability["passed"] for s in self.scenarios)
        return all(scenarios) and all(self.checks.values())

    @property
    def targets_met(self) -> bool:
        return all(target.passed for target in self.targets)

    def to_json(self) -> dict[str, Any]:
        payload = {
            "title": self.title,
            "date_utc": self.date_utc,
            "machine": self.machine,
            "load_average_1_5_15": {"before": self.load_before, "after": self.load_after},
            "settings": self.settings,
            "scenarios": [scenario.to_json() for scenario in self.scenarios],
            "derived": self.derived,
            "targets": [target.to_json() for target in self.targets],
            "targets_met": self.targets_met,
            "durability_checks_passed": self.durable,
            "notes": self.notes,
        }
        if self.checks:
            payload["checks"] = self.checks
        return payload


def _fmt(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def _cpu_cells(cpu: Mapping[str, Any] | None) -> str:
    if cpu is None:
        return "n/a | n/a | n/a"
    other = cpu.get("other_on_core_percent")
    steal = cpu.get("core_steal_percent") or 0
    per_request = cpu["server_cpu_us_per_request"]
    return (
        f"{cpu['server_cpu_percent']:.0f}% | "
        + (f"{other:.0f}%" if other is not None else "n/a")
        # Time the hypervisor gave to other machines: lost to the server all the same.
        + (f" + {steal:.0f}% steal" if steal >= 1 else "")
        + " | "
        + (f"{per_request:,.0f}" if per_request is not None else "n/a")
    )


def scenario_table(scenarios: Sequence[ScenarioResult]) -> str:
    """The markdown table printed to the terminal and written into the doc."""
    rows = [
        "| Scenario | Server | Conns | Events/req | Req/s | 2xx events/s | p50 ms | p99 ms "
        "| Non-2xx | Socket errors | Server CPU | Other on its core | CPU µs/req | Durability |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for s in scenarios:
        if s.durability is None:
            durable = "n/a"
        else:
            durable = "pass" if s.durability["passed"] else "**FAIL**"
            durable += f" ({s.durability['log_length']:,} in log)"
        rows.append(
            f"| {s.name} | {s.server} | {s.load.connections} | {s.load.events_per_ok} "
            f"| {_fmt(s.measured.requests_per_s)} | {_fmt(s.events_per_s)} "
            f"| {s.measured.latency_ms['p50']:.2f} | {s.measured.latency_ms['p99']:.2f} "
            f"| {s.measured.non_2xx} | {s.measured.socket_errors} | {_cpu_cells(s.cpu)} "
            f"| {durable} |"
        )
    return "\n".join(rows)


def target_table(targets: Sequence[TargetCheck]) -> str:
    rows = ["| Target | Requirement | Measured | Result |", "|---|---|---|---|"]
    rows.extend(f"| {t.name} | {t.requirement} | {t.measured} | {t.verdict} |" for t in targets)
    return "\n".join(rows)


def machine_line(report: GroupReport) -> str:
    m = report.machine
    return (
        f"{m['nproc']} cores ({m['cpu_model']}), {m['memory_gib']} GiB RAM, "
        f"Linux {m['kernel']}, Python {m['python']}, {m['wrk']}, "
        f"data dir on {m['data_dir_filesystem']}, commit `{m['git_commit'][:12]}`"
        + (" with uncommitted changes" if m.get("git_tracked_files_modified") else "")
        + ". "
        f"Load average (1/5/15 min) before: {' / '.join(map(str, report.load_before))}, "
        f"after: {' / '.join(map(str, report.load_after))}."
    )


# --------------------------------------------------------------------------- registry

GroupRunner = Callable[[Runner], GroupReport]


def default_summary(report: GroupReport) -> str:
    """What the terminal shows for a group of wrk scenarios: their table and the targets."""
    return f"{scenario_table(report.scenarios)}\n\n{target_table(report.targets)}"


@dataclass(frozen=True)
class ScenarioGroup:
    name: str
    run: GroupRunner
    render: Callable[[GroupReport], str]
    # Groups whose figures are not one wrk scenario per row print their own tables.
    summary: Callable[[GroupReport], str] = default_summary


GROUPS: dict[str, ScenarioGroup] = {}


def scenario_group(
    name: str,
    render: Callable[[GroupReport], str],
    *,
    summary: Callable[[GroupReport], str] = default_summary,
) -> Callable[[GroupRunner], GroupRunner]:
    """Register a group for ``--only NAME``; ``render`` writes its doc section body and
    ``summary`` what the terminal shows after it ran."""

    def register(run: GroupRunner) -> GroupRunner:
        GROUPS[name] = ScenarioGroup(name, run, render, summary)
        return run

    return register


# --------------------------------------------------------------------------- ingest


def gateway_env(api_key: str) -> dict[str, str]:
    """The gateway's environment: ours minus any STRONGROOM_* the caller had set."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")},
        "STRONGROOM_API_KEYS": api_key,
        "STRONGROOM_ACCESS_LOG": "true",
        **dict.fromkeys(RATE_LIMIT_VARIABLES, UNLIMITED_RATE),
    }


def read_metrics(base_url: str) -> dict[str, float]:
    """The few gauges and counters the durability check needs, from /metrics."""
    text = httpx.get(base_url + "/metrics", timeout=10).text
    wanted: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name == "strongroom_stream_log_length"
                and labels.get("topic") == TOKENIZED_TOPIC
            ):
                wanted["log_length"] = sample.value
            elif (
                sample.name == "strongroom_http_requests_total"
                and labels.get("route") == EVENTS_ROUTE
                and labels.get("method") == "POST"
                and labels.get("status") == "202"
            ):
                wanted["server_202"] = sample.value
            elif sample.name == "strongroom_ingest_events_accepted_total":
                wanted["server_events_accepted"] = sample.value
            elif sample.name == "strongroom_log_writer_queued_events":
                wanted["writer_queue"] = sample.value
    return wanted


def settled_metrics(base_url: str, timeout_s: float = 15.0) -> dict[str, float]:
    """Metrics once requests still in flight when wrk stopped have been answered.

    wrk exits with requests outstanding; the gateway still commits them, so the
    log is read only after two consecutive scrapes agree and nothing is queued.
    """
    deadline = time.monotonic() + timeout_s
    previous = read_metrics(base_url)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        current = read_metrics(base_url)
        if current.get("writer_queue", 0) == 0 and all(
            current.get(key) == previous.get(key)
            for key in ("log_length", "server_202", "server_events_accepted")
        ):
            return current
        previous = current
    return previous


def durability_check(
    load: Load, runs: Sequence[WrkRun], metrics: Mapping[str, float]
) -> dict[str, Any]:
    """Is every event wrk saw acknowledged in the log, and nothing more than was sent?

    ``acknowledged`` counts the 202s wrk read (warm-up and measured) × events per
    request. When wrk stops it abandons the requests in flight, one per busy
    connection; the gateway still commits and answers them, so the log holds
    exactly ``acknowledged`` + abandoned × events per request when every request
    succeeded. The gateway's own 202 count must match the log exactly too.
    """
    per = load.events_per_ok
    acknowledged = sum(run.count(202) for run in runs) * per
    abandoned = sum(run.abandoned for run in runs) * per
    log_length = int(metrics.get("log_length", -1))
    server_acknowledged = int(metrics.get("server_202", -1)) * per
    no_loss = log_length >= acknowledged
    matches_server = log_length == server_acknowledged
    exact = log_length == acknowledged + abandoned
    return {
        "acknowledged_events_seen_by_wrk": acknowledged,
        "events_in_abandoned_requests": abandoned,
        "log_length": log_length,
        "acknowledged_events_sent_by_gateway": server_acknowledged,
        "events_accepted_metric": int(metrics.get("server_events_accepted", -1)),
        "no_acknowledged_event_lost": no_loss,
        "log_equals_gateway_202s_x_events": matches_server,
        "log_equals_wrk_202s_plus_abandoned_x_events": exact,
        "passed": no_loss and matches_server and log_length <= acknowledged + abandoned,
    }


def access_log_lines(log_path: Path) -> int:
    """Request lines in the gateway's output: evidence the access log was really on."""
    count = 0
    with log_path.open("rb") as log:
        for line in log:
            if line.startswith(b"{") and b'"request"' in line:
                with contextlib.suppress(json.JSONDecodeError):
                    count += json.loads(line).get("event") == "request"
    return count


def run_gateway_scenario(runner: Runner, name: str, load: Load) -> ScenarioResult:
    """A fresh gateway (fresh data dir) per scenario, so each durability check stands alone."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    data_dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=runner.work_dir))
    log_path = runner.work_dir / f"{name}.log"
    argv = [sys.executable, "-m", "strongroom", "serve", "--port", str(port)]
    argv += ["--data-dir", str(data_dir)]
    with server(
        argv,
        env=gateway_env(runner.api_key),
        log_path=log_path,
        probe_url=base_url + "/health",
        probe_status=200,
        cpu=runner.server_cpu,
    ) as process:
        warmup, measured, cpu = runner.warm_and_measure(base_url + EVENTS_ROUTE, load, process.pid)
        metrics = settled_metrics(base_url)
    durability = durability_check(load, (warmup, measured), metrics)
    durability["access_log_lines"] = access_log_lines(log_path)
    return ScenarioResult(name, "gateway", load, warmup, measured, cpu, durability)


def run_bare_scenario(runner: Runner, name: str, load: Load) -> ScenarioResult:
    """The same script against ``benchmarks/bare_app.py`` on the same uvicorn stack."""
    port = free_port()
    url = f"http://127.0.0.1:{port}{EVENTS_ROUTE}"
    argv = [sys.executable, "-m", "uvicorn", "benchmarks.bare_app:app", "--app-dir", str(ROOT)]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop"]
    argv += ["--http", "httptools", "--workers", "1", "--no-access-log"]
    argv += ["--log-level", "warning", "--no-server-header", "--backlog", "4096"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    with server(
        argv,
        env=env,
        log_path=runner.work_dir / f"{name}.log",
        probe_url=url,
        probe_status=405,  # one POST route and nothing else: a GET proves it answers
        cpu=runner.server_cpu,
    ) as process:
        warmup, measured, cpu = runner.warm_and_measure(url, load, process.pid)
    return ScenarioResult(name, "bare Starlette", load, warmup, measured, cpu)


BATCH_EVENTS_TARGET: Final = 50_000
SINGLE_RATIO_TARGET: Final = 0.25
SINGLE_P99_TARGET_MS: Final = 25.0


#: Rounds of (bare, gateway) single-event runs, back to back. On a shared VM the
#: machine's speed drifts by a fifth within minutes; a ratio of two runs minutes
#: apart measured the drift as much as the gateway, so the pairs alternate and
#: the median round is judged.
SINGLE_ROUNDS: Final = 3
#: Batch scenarios run in rounds too, for the same drift: one round of each
#: connection count after the other, and each count judged on its median round.
BATCH_ROUNDS: Final = 3
BATCH_CONNECTIONS: Final = (16, 64)


def median_pair(
    pairs: Sequence[tuple[ScenarioResult, ScenarioResult]],
) -> tuple[ScenarioResult, ScenarioResult]:
    """The (gateway, bare) pair whose single-to-bare ratio is the median of the rounds."""
    ordered = sorted(pairs, key=lambda pair: single_to_bare_ratio(*pair))
    return ordered[(len(ordered) - 1) // 2]


def median_round(rounds: Sequence[ScenarioResult]) -> ScenarioResult:
    """The round with the median durable events/s."""
    ordered = sorted(rounds, key=lambda scenario: scenario.events_per_s)
    return ordered[(len(ordered) - 1) // 2]


def _durable(scenario: ScenarioResult) -> bool:
    return bool(scenario.durability and scenario.durability["passed"])


def single_to_bare_ratio(single: ScenarioResult, bare: ScenarioResult) -> float:
    """The target ratio: gateway 2xx req/s over bare req/s, same load, same core."""
    return single.measured.ok_per_s / bare.measured.ok_per_s if bare.measured.ok else 0.0


def refusals(name: str, run: WrkRun) -> tuple[dict[int, int], list[str]]:
    """The statuses of ``run`` that were not 2xx, and a note when there were any
    (or socket errors)."""
    refused = {code: n for code, n in run.statuses.items() if code >= 300}
    if refused or run.socket_errors:
        return refused, [
            f"{name}: non-2xx responses by status {refused}, socket errors {run.errors}."
        ]
    return refused, []


def load_generator_note(name: str, cpu: dict[str, Any] | None) -> list[str]:
    """A note when wrk kept its own core busy: then it may have set the pace."""
    wrk_cpu = (cpu or {}).get("load_generator_cpu_percent", 0)
    if wrk_cpu > 90:
        return [
            f"{name}: wrk used {wrk_cpu:.0f}% of its core; the load generator, "
            "not the server, may have set the pace."
        ]
    return []


def single_to_bare_cpu_ratio(single: ScenarioResult, bare: ScenarioResult) -> float | None:
    """Bare CPU µs/request over the gateway's: the same ratio, nearly blind to contention.

    Informational only (the target is judged on req/s); it shows what the ratio
    would be if both servers had had their core to themselves.
    """
    gateway_cost = (single.cpu or {}).get("server_cpu_us_per_request")
    bare_cost = (bare.cpu or {}).get("server_cpu_us_per_request")
    if not gateway_cost or not bare_cost:
        return None
    return float(bare_cost) / float(gateway_cost)


CONTENDED_SHARE: Final = 20.0  # % of a server's core taken by other processes
#: Steal above this on the server's core earns a scenario a note.
STEAL_NOTE_SHARE: Final = 5.0


def lost_share(cpu: Mapping[str, Any] | None) -> float:
    """% of the server's core that other processes or the hypervisor (steal) took."""
    cpu = cpu or {}
    return float(cpu.get("other_on_core_percent") or 0) + float(cpu.get("core_steal_percent") or 0)


def _lost_share(scenario: ScenarioResult) -> float:
    return lost_share(scenario.cpu)


def _contended(scenario: ScenarioResult) -> bool:
    return _lost_share(scenario) > CONTENDED_SHARE


def _ratio_caveat(
    single: ScenarioResult, bare: ScenarioResult, ratio: float, cpu_ratio: float | None
) -> str | None:
    """Flag a ratio verdict that contention decided rather than the gateway.

    Other processes slow both servers, but not equally: the bare endpoint needs
    the whole core to reach its ceiling, so losing the core flatters the ratio.
    When either server lost much of its core and the CPU-per-request ratio falls
    on the other side of the target, the verdict is marked unreliable.
    """
    if cpu_ratio is None or not (_contended(single) or _contended(bare)):
        return None
    if (ratio >= SINGLE_RATIO_TARGET) == (cpu_ratio >= SINGLE_RATIO_TARGET):
        return None
    return (
        "unreliable: other processes and the hypervisor took "
        f"{_lost_share(bare):.0f}% of the bare server's core "
        f"and {_lost_share(single):.0f}% of the gateway's; "
        f"by CPU per request it is {cpu_ratio:.1%}"
    )


def _contention_caveat(scenario: ScenarioResult) -> str | None:
    """For a failed absolute target: the share of its core the judged run lost."""
    if not _contended(scenario):
        return None
    return (
        f"unreliable: other processes and the hypervisor took {_lost_share(scenario):.0f}% "
        f"of the server's core in {scenario.name}"
    )


def ingest_targets(
    single: ScenarioResult, bare: ScenarioResult, batch_rounds: Sequence[Sequence[ScenarioResult]]
) -> list[TargetCheck]:
    """The ingest targets, judged on 2xx-only figures and on the durability check.

    Each batch target is judged on its median round, and every round must have
    passed the durability check.
    """
    checks = []
    for rounds in batch_rounds:
        batch = median_round(rounds)
        undurable = [scenario.name for scenario in rounds if not _durable(scenario)]
        checks.append(
            TargetCheck(
                f"Batches of 100, {batch.load.connections} connections",
                f"≥ {BATCH_EVENTS_TARGET:,} durable events/s",
                f"{_fmt(batch.events_per_s)} events/s (median of {len(rounds)} rounds)"
                + (f" (durability FAIL: {', '.join(undurable)})" if undurable else ""),
                batch.events_per_s >= BATCH_EVENTS_TARGET and not undurable,
                _contention_caveat(batch),
            )
        )
    ratio = single_to_bare_ratio(single, bare)
    cpu_ratio = single_to_bare_cpu_ratio(single, bare)
    checks.append(
        TargetCheck(
            "Single events vs bare endpoint, 64 connections",
            f"≥ {SINGLE_RATIO_TARGET:.0%} of bare req/s",
            f"{ratio:.1%} ({_fmt(single.measured.ok_per_s)} / "
            f"{_fmt(bare.measured.ok_per_s)} req/s)"
            + (f"; by CPU per request {cpu_ratio:.1%}" if cpu_ratio is not None else ""),
            ratio >= SINGLE_RATIO_TARGET,
            _ratio_caveat(single, bare, ratio, cpu_ratio),
        )
    )
    p99 = single.measured.latency_ms["p99"]
    checks.append(
        TargetCheck(
            "Single events p99, 64 connections",
            f"≤ {SINGLE_P99_TARGET_MS:g} ms",
            f"{p99:.2f} ms",
            p99 <= SINGLE_P99_TARGET_MS,
            _contention_caveat(single),
        )
    )
    return checks


def render_ingest(report: GroupReport) -> str:
    """The whole "Ingest" section; run.py owns it between the markers."""
    settings = report.settings
    lines = [
        "## Ingest",
        "",
        "<!-- Generated by `python -m benchmarks.run --only ingest`; edits here are "
        "overwritten. -->",
        "",
        f"Measured {report.date_utc} on: {machine_line(report)}",
        "",
        scenario_table(report.scenarios),
        "",
        target_table(report.targets),
        "",
        "Req/s counts every completed response; events/s counts only 2xx responses "
        "× events per request. Latency is wrk's per-request latency over the measured run.",
        "",
        "### Reproduce",
        "",
        "```sh",
        "make bench                                   # installs wrk if missing",
        ".venv/bin/python -m benchmarks.run --only ingest",
        "```",
        "",
        "Full figures (warm-up runs, status counts, durability details) are in "
        "`benchmarks/results/latest.json`.",
        "",
        "### Method",
        "",
        (
            f"- Server pinned to core {settings['server_cpu']}, wrk to core "
            f"{settings['load_cpu']} (`taskset -c`), so the load generator does not compete "
            "with the server for a core."
            if settings["server_cpu"] is not None
            else "- **Not pinned**: fewer than two usable cores (or no `taskset`), so the "
            "load generator shared the server's core and the figures are lower bounds."
        ),
        "- Every scenario starts its own gateway, "
        "`python -m strongroom serve --data-dir <fresh temp dir>`, one process "
        "(uvicorn, uvloop, httptools, one write per response), SQLite log with "
        "`synchronous=FULL`: a 202 means the events were committed.",
        "- The access log is **on** (the default), written to a file, as in production.",
        "- The per-key and per-tenant rate limiters are set out of the way ("
        + ", ".join(f"`{name}`" for name in RATE_LIMIT_VARIABLES)
        + f" = {UNLIMITED_RATE}): they still run on every request but never refuse, "
        "so the figures measure ingest rather than the limits.",
        f"- `wrk -t1 --latency`, {settings['warmup_s']} s warm-up then "
        f"{settings['duration_s']} s measured, per scenario. `benchmarks/ingest.lua` builds "
        "every body, so every event id is new: a counter, the wrk thread id, random bits "
        "and a per-run nonce in a UUID shape. Duplicates would be answered without a write.",
        "- Baseline: `benchmarks/bare_app.py`, a bare Starlette route that awaits the body "
        "and answers 202, under uvicorn with the same loop and HTTP parser, one worker, "
        "access log off, same core, same script: the ceiling for this stack on this machine.",
        "- Durability check, per gateway scenario (warm-up and measured runs together): "
        'once the gateway is idle, `strongroom_stream_log_length{topic="payments.tokenized"}` '
        "from `/metrics` must be at least the 202s wrk read × events per request (nothing "
        "acknowledged is lost) and equal the gateway's own 202 count × events per request. "
        "wrk abandons one request per connection when it stops; the gateway still commits "
        "those, so the script also counts requests sent, and the log is expected to equal "
        "(202s read + requests abandoned) × events per request exactly.",
        "- Other work on the same machine lowers every figure; the load average before "
        "and after the run is recorded for that reason, and so is, per scenario, the "
        "server's CPU use during the measured run (from `/proc`): *Server CPU* is its "
        "share of its core, *Other on its core* the share other processes took from it "
        "(with `+ N% steal` when the hypervisor gave part of the core to other machines; "
        "a target judged on a run that lost more than a fifth of its core that way is "
        "marked unreliable), and "
        "*CPU µs/req* its CPU time per request, which contention barely changes (wrk's "
        "own CPU use is in the JSON, to show the load generator was not the limit). The "
        "single-event ratio is also given by CPU per request (bare ÷ gateway) for that "
        "reason; the target itself is judged on requests/s.",
        "",
        "### Targets",
        "",
        f"- Batches of 100: ≥ {BATCH_EVENTS_TARGET:,} durable events/s.",
        f"- Single-event requests: ≥ {SINGLE_RATIO_TARGET:.0%} of the bare endpoint's "
        f"requests/s, with p99 ≤ {SINGLE_P99_TARGET_MS:g} ms at 64 connections.",
        f"- Single events and the bare endpoint run in {settings.get('single_rounds', 1)} "
        "back-to-back rounds (bare, then gateway); both single-event targets are judged "
        "on the round with the median ratio, and every round is in the table and the notes.",
        f"- Batches run in {settings.get('batch_rounds', 1)} rounds of each connection "
        "count, one count after the other; each batch target is judged on its median "
        "round by events/s, and every round must pass the durability check.",
    ]
    if report.notes:
        lines += ["", "### Notes", "", *(f"- {note}" for note in report.notes)]
    return "\n".join(lines)


@scenario_group("ingest", render_ingest)
def ingest(runner: Runner) -> GroupReport:
    """Single events and batches of 100 into the gateway, and the bare-endpoint ceiling."""
    pairs = []
    for round_number in range(1, SINGLE_ROUNDS + 1):
        pair_bare = run_bare_scenario(runner, f"bare-single-c64-r{round_number}", Load(64, 0))
        pair_single = run_gateway_scenario(runner, f"single-c64-r{round_number}", Load(64, 0))
        pairs.append((pair_single, pair_bare))
    single, bare = median_pair(pairs)
    batch_rounds: dict[int, list[ScenarioResult]] = {c: [] for c in BATCH_CONNECTIONS}
    for round_number in range(1, BATCH_ROUNDS + 1):
        for connections in BATCH_CONNECTIONS:
            name = f"batch100-c{connections}-r{round_number}"
            batch_rounds[connections].append(
                run_gateway_scenario(runner, name, Load(connections, 100))
            )
    batches = [scenario for rounds in batch_rounds.values() for scenario in rounds]
    scenarios = [*(s for s, _ in pairs), *batches, *(b for _, b in pairs)]
    cpu_ratio = single_to_bare_cpu_ratio(single, bare)
    notes = [
        "Single events vs bare, round by round (bare run first, then the gateway): "
        + "; ".join(
            f"r{number}: {single_to_bare_ratio(s, b):.1%} "
            f"({_fmt(s.measured.ok_per_s)} / {_fmt(b.measured.ok_per_s)} req/s, "
            f"p99 {s.measured.latency_ms['p99']:.1f} ms)"
            for number, (s, b) in enumerate(pairs, 1)
        )
        + f". The targets are judged on the median round, {single.name}.",
        *(
            f"Batches of 100 at {connections} connections, round by round: "
            + "; ".join(
                f"r{number}: {_fmt(scenario.events_per_s)} events/s "
                f"({_fmt((scenario.cpu or {}).get('server_cpu_us_per_request', 0))} CPU µs/req)"
                for number, scenario in enumerate(rounds, 1)
            )
            + f". The target is judged on the median round, {median_round(rounds).name}."
            for connections, rounds in batch_rounds.items()
        ),
    ]
    for scenario in scenarios:
        refused, refusal_notes = refusals(scenario.name, scenario.measured)
        notes.extend(refusal_notes)
        cpu = scenario.cpu or {}
        ceiling = cpu.get("one_core_ceiling_requests_per_s")
        if ceiling:
            notes.append(
                f"{scenario.name}: at {cpu['server_cpu_us_per_request']:,.0f} CPU µs "
                f"per request, one uncontended core would allow about {ceiling:,} req/s "
                f"({ceiling * scenario.load.events_per_ok:,} events/s) if the server stayed "
                "CPU-bound."
            )
        notes.extend(load_generator_note(scenario.name, cpu))
        if (cpu.get("core_steal_percent") or 0) >= STEAL_NOTE_SHARE:
            notes.append(
                f"{scenario.name}: the hypervisor took {cpu['core_steal_percent']:.0f}% of the "
                "server's core (steal time), so this run understates the server."
            )
        if refused.get(429):
            notes.append(
                f"{scenario.name}: a rate limiter refused requests; a limit this harness "
                f"does not yet raise ({', '.join(RATE_LIMIT_VARIABLES)}) is in the way."
            )
        if scenario.durability is not None:
            d = scenario.durability
            exact = "exact" if d["log_equals_wrk_202s_plus_abandoned_x_events"] else "NOT exact"
            notes.append(
                f"{scenario.name}: the log holds {d['log_length']:,} events = "
                f"{d['acknowledged_events_seen_by_wrk']:,} in 202s wrk read + "
                f"{d['events_in_abandoned_requests']:,} in requests wrk abandoned in flight "
                f"when it stopped ({exact}); "
                f"the gateway's 202 count × events = {d['acknowledged_events_sent_by_gateway']:,}; "
                f"{d['access_log_lines']:,} access-log lines written."
            )
    single_ceiling = (single.cpu or {}).get("one_core_ceiling_requests_per_s")
    if single_ceiling:
        # Little's law: with every connection always waiting, mean latency is
        # connections ÷ throughput, so a p99 target implies a throughput floor.
        floor_ms = 1000 * single.load.connections / single_ceiling
        notes.append(
            f"{single.name}: even at its one-core ceiling ({single_ceiling:,} req/s), "
            f"{single.load.connections} busy connections mean ≥ {floor_ms:.1f} ms average "
            f"latency (Little's law); p99 ≤ {SINGLE_P99_TARGET_MS:g} ms needs more than "
            f"{1000 * single.load.connections / SINGLE_P99_TARGET_MS:,.0f} req/s."
        )
    return GroupReport(
        name="ingest",
        title="Ingest",
        scenarios=scenarios,
        targets=ingest_targets(single, bare, list(batch_rounds.values())),
        derived={
            "single_to_bare_req_per_s_ratio": round(single_to_bare_ratio(single, bare), 4),
            "single_to_bare_cpu_per_request_ratio": (
                None if cpu_ratio is None else round(cpu_ratio, 4)
            ),
        },
        settings={
            "warmup_s": runner.warmup_s,
            "duration_s": runner.duration_s,
            "wrk_threads": 1,
            "server_cpu": runner.server_cpu,
            "load_cpu": runner.load_cpu,
            "access_log": True,
            "rate_limits": dict.fromkeys(RATE_LIMIT_VARIABLES, UNLIMITED_RATE),
            "fresh_gateway_per_scenario": True,
            "single_rounds": SINGLE_ROUNDS,
            "batch_rounds": BATCH_ROUNDS,
        },
        notes=notes,
    )


# --------------------------------------------------------------------------- keys

KEYS_RATIO_TARGET: Final = 0.90
KEYS_ROUNDS: Final = 2
KEYS_LOAD: Final = Load(64, 0)
CONFIGURED: Final = "configured"
MANAGED: Final = "managed"
KEY_KINDS: Final = (CONFIGURED, MANAGED)
MANAGED_KEY_PREFIX: Final = "sr_live_"
CLI_TIMEOUT_S: Final = 60.0


def strongroom_cli(args: Sequence[str], env: Mapping[str, str]) -> str:
    """Run ``python -m strongroom ARGS`` and return the last line it printed.

    The admin commands print the secret they create as their only stdout line: it
    is returned, never echoed. On failure only stderr is shown, which holds no key.
    """
    done = subprocess.run(
        [sys.executable, "-m", "strongroom", *args],
        capture_output=True,
        text=True,
        env=dict(env),
        cwd=ROOT,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise HarnessError(
            f"strongroom {' '.join(args[:2])} failed ({done.returncode}):\n{done.stderr.strip()}"
        )
    return lines[-1].strip()


def create_managed_key(data_dir: Path, env: Mapping[str, str]) -> str:
    """An operator key for tenant ``default``, made as an operator would: with the CLI.

    ``init`` creates the tenant (and a platform admin key, not used here) even with
    STRONGROOM_API_KEYS set. Both run before the gateway starts on the same data dir,
    so the managed key is a stored record the gateway must look up, check and cache,
    which is the cost this group compares with a configured key's.
    """
    data = ["--data-dir", str(data_dir)]
    strongroom_cli(["init", *data], env)
    key = strongroom_cli(
        ["keys", "create", "--tenant", "default", "--role", "operator", "--name", "bench", *data],
        env,
    )
    if not key.startswith(MANAGED_KEY_PREFIX):
        raise HarnessError(f"strongroom keys create printed no {MANAGED_KEY_PREFIX}… key")
    return key


def run_key_rounds(runner: Runner) -> tuple[list[ScenarioResult], dict[str, Any]]:
    """Both keys against one gateway, alternating, then one durability check over all runs.

    One gateway and one data dir for both keys, so the only difference between the
    runs is the key; alternating configured/managed over rounds spreads slow drift
    (a growing log, other work on the machine) over both instead of one.
    """
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    data_dir = Path(tempfile.mkdtemp(prefix="keys-", dir=runner.work_dir))
    log_path = runner.work_dir / "keys.log"
    env = gateway_env(runner.api_key)
    keys = {CONFIGURED: runner.api_key, MANAGED: create_managed_key(data_dir, env)}
    argv = [sys.executable, "-m", "strongroom", "serve", "--port", str(port)]
    argv += ["--data-dir", str(data_dir)]
    results: list[ScenarioResult] = []
    with server(
        argv,
        env=env,
        log_path=log_path,
        probe_url=base_url + "/health",
        probe_status=200,
        cpu=runner.server_cpu,
    ) as process:
        for round_number in range(1, KEYS_ROUNDS + 1):
            for kind in KEY_KINDS:
                print(f"   {kind} key, round {round_number} ...", flush=True)
                warmup, measured, cpu = runner.warm_and_measure(
                    base_url + EVENTS_ROUTE, KEYS_LOAD, process.pid, api_key=keys[kind]
                )
                results.append(
                    ScenarioResult(
                        f"{kind}-r{round_number}", "gateway", KEYS_LOAD, warmup, measured, cpu
                    )
                )
        metrics = settled_metrics(base_url)
    runs = [run for result in results for run in (result.warmup, result.measured)]
    durability = durability_check(KEYS_LOAD, runs, metrics)
    durability["access_log_lines"] = access_log_lines(log_path)
    return results, durability


def _key_kind(scenario: ScenarioResult) -> str:
    return scenario.name.split("-", 1)[0]


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


@dataclass(frozen=True)
class KeyMeans:
    """One key kind's figures, averaged over its rounds."""

    kind: str
    rounds: int
    requests_per_s: float
    ok_per_s: float
    spread: float  # (max - min) / mean of the rounds' 2xx req/s: how noisy the figure is
    p50_ms: float
    p99_ms: float
    cpu_us_per_request: float | None
    non_2xx: int
    socket_errors: int

    @classmethod
    def of(cls, kind: str, scenarios: Sequence[ScenarioResult]) -> KeyMeans:
        mine = [s for s in scenarios if _key_kind(s) == kind]
        ok = [s.measured.ok_per_s for s in mine]
        costs = [(s.cpu or {}).get("server_cpu_us_per_request") for s in mine]
        known = [float(cost) for cost in costs if cost is not None]
        mean_ok = _mean(ok)
        return cls(
            kind=kind,
            rounds=len(mine),
            requests_per_s=_mean([s.measured.requests_per_s for s in mine]),
            ok_per_s=mean_ok,
            spread=(max(ok) - min(ok)) / mean_ok if mean_ok else 0.0,
            p50_ms=_mean([s.measured.latency_ms["p50"] for s in mine]),
            p99_ms=_mean([s.measured.latency_ms["p99"] for s in mine]),
            cpu_us_per_request=_mean(known) if known and len(known) == len(mine) else None,
            non_2xx=sum(s.measured.non_2xx for s in mine),
            socket_errors=sum(s.measured.socket_errors for s in mine),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "rounds": self.rounds,
            "requests_per_s": round(self.requests_per_s, 1),
            "requests_2xx_per_s": round(self.ok_per_s, 1),
            "round_spread": round(self.spread, 4),
            "latency_p50_ms_mean": round(self.p50_ms, 3),
            "latency_p99_ms_mean": round(self.p99_ms, 3),
            "server_cpu_us_per_request_mean": (
                None if self.cpu_us_per_request is None else round(self.cpu_us_per_request, 1)
            ),
            "non_2xx": self.non_2xx,
            "socket_errors": self.socket_errors,
        }


def key_ratios(configured: KeyMeans, managed: KeyMeans) -> tuple[float, float | None]:
    """Managed over configured 2xx req/s (the target), and the same by CPU per request.

    The CPU ratio (configured µs ÷ managed µs) is what the req/s ratio would be if
    the gateway were CPU-bound with its core to itself: nearly blind to contention.
    """
    ratio = managed.ok_per_s / configured.ok_per_s if configured.ok_per_s else 0.0
    if not configured.cpu_us_per_request or not managed.cpu_us_per_request:
        return ratio, None
    return ratio, configured.cpu_us_per_request / managed.cpu_us_per_request


def keys_target(
    scenarios: Sequence[ScenarioResult], configured: KeyMeans, managed: KeyMeans
) -> TargetCheck:
    """The acceptance target, with a caveat when contention rather than keys decided it."""
    ratio, cpu_ratio = key_ratios(configured, managed)
    caveat = None
    if (
        cpu_ratio is not None
        and any(_contended(s) for s in scenarios)
        and (ratio >= KEYS_RATIO_TARGET) != (cpu_ratio >= KEYS_RATIO_TARGET)
    ):
        worst = max((s.cpu or {}).get("other_on_core_percent", 0) for s in scenarios)
        caveat = (
            f"unreliable: other processes took up to {worst:.0f}% of the gateway's core; "
            f"by CPU per request it is {cpu_ratio:.1%}"
        )
    return TargetCheck(
        "Managed vs configured key, single events, 64 connections",
        f"≥ {KEYS_RATIO_TARGET:.0%} of the configured key's 2xx req/s",
        f"{ratio:.1%} ({_fmt(managed.ok_per_s)} / {_fmt(configured.ok_per_s)} req/s, "
        f"mean of {managed.rounds} rounds each)"
        + (f"; by CPU per request {cpu_ratio:.1%}" if cpu_ratio is not None else ""),
        ratio >= KEYS_RATIO_TARGET,
        caveat,
    )


def keys_run_table(scenarios: Sequence[ScenarioResult]) -> str:
    rows = [
        "| Run | Key | Req/s | 2xx req/s | p50 ms | p99 ms | Non-2xx | Socket errors "
        "| Server CPU | Other on its core | CPU µs/req |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    rows.extend(
        f"| {index} | {_key_kind(s)} | {_fmt(s.measured.requests_per_s)} "
        f"| {_fmt(s.measured.ok_per_s)} | {s.measured.latency_ms['p50']:.2f} "
        f"| {s.measured.latency_ms['p99']:.2f} | {s.measured.non_2xx} "
        f"| {s.measured.socket_errors} | {_cpu_cells(s.cpu)} |"
        for index, s in enumerate(scenarios, 1)
    )
    return "\n".join(rows)


def keys_mean_table(report: GroupReport) -> str:
    rows = [
        "| Key | Rounds | Req/s | 2xx req/s | Spread between rounds | p50 ms | p99 ms "
        "| CPU µs/req |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for kind in KEY_KINDS:
        m = report.derived["means"][kind]
        cost = m["server_cpu_us_per_request_mean"]
        rows.append(
            f"| {kind} | {m['rounds']} | {_fmt(m['requests_per_s'])} "
            f"| {_fmt(m['requests_2xx_per_s'])} | {m['round_spread']:.1%} "
            f"| {m['latency_p50_ms_mean']:.2f} | {m['latency_p99_ms_mean']:.2f} "
            f"| {'n/a' if cost is None else _fmt(cost)} |"
        )
    derived = report.derived
    cpu_ratio = derived["managed_to_configured_cpu_per_request_ratio"]
    rows.append(
        f"| **managed ÷ configured** | | | **{derived['managed_to_configured_ratio']:.1%}** | | "
        f"| | {'n/a' if cpu_ratio is None else f'{cpu_ratio:.1%} (by CPU per request)'} |"
    )
    return "\n".join(rows)


def _keys_durability_line(report: GroupReport) -> str:
    d = report.derived["durability"]
    verdict = "pass" if d["passed"] else "**FAIL**"
    exact = "exact" if d["log_equals_wrk_202s_plus_abandoned_x_events"] else "NOT exact"
    return (
        f"Durability ({verdict}, all {2 * len(report.scenarios)} wrk runs against the one "
        f"gateway, warm-ups included): the log holds {d['log_length']:,} events = "
        f"{d['acknowledged_events_seen_by_wrk']:,} in 202s wrk read + "
        f"{d['events_in_abandoned_requests']:,} in requests wrk abandoned in flight ({exact}); "
        f"the gateway's 202 count × events = {d['acknowledged_events_sent_by_gateway']:,}."
    )


def keys_summary(report: GroupReport) -> str:
    return "\n\n".join(
        [
            keys_run_table(report.scenarios),
            keys_mean_table(report),
            target_table(report.targets),
            _keys_durability_line(report),
        ]
    )


def render_keys(report: GroupReport) -> str:
    """The "Managed keys vs configured keys" section; run.py owns it between the markers."""
    settings = report.settings
    lines = [
        "## Managed keys vs configured keys",
        "",
        "<!-- Generated by `python -m benchmarks.run --only keys`; edits here are overwritten. -->",
        "",
        f"Measured {report.date_utc} on: {machine_line(report)}",
        "",
        "Single-event ingest at 64 connections through one gateway, authenticated with a "
        "key from `STRONGROOM_API_KEYS` (configured) or with a stored `sr_live_` operator "
        "key (managed). Runs in the order measured:",
        "",
        keys_run_table(report.scenarios),
        "",
        "Mean of each key's rounds:",
        "",
        keys_mean_table(report),
        "",
        target_table(report.targets),
        "",
        _keys_durability_line(report),
        "",
        "### Reproduce",
        "",
        "```sh",
        ".venv/bin/python -m benchmarks.run --only keys",
        "```",
        "",
        "### Method",
        "",
        "- One gateway, `python -m strongroom serve --data-dir <fresh temp dir>`, started "
        "with a configured key in `STRONGROOM_API_KEYS`. Before it starts, on the same data "
        "dir, `python -m strongroom init` creates tenant `default` and "
        "`python -m strongroom keys create --tenant default --role operator` creates the "
        "managed key, as an operator would. Both keys are operators of tenant `default`, "
        "so everything after authentication is the same.",
        f"- Order: {' / '.join(settings['order'])}, each a {settings['warmup_s']} s wrk "
        f"warm-up then {settings['duration_s']} s measured (`wrk -t1 -c64 --latency`, "
        "`benchmarks/ingest.lua`, every event id new; the key reaches wrk in "
        "`BENCH_API_KEY`). Alternating spreads drift over both keys; the target is judged "
        "on the mean 2xx req/s of each key's rounds, and the spread between rounds shows "
        "how much of a difference is noise.",
        (
            f"- Gateway pinned to core {settings['server_cpu']}, wrk to core "
            f"{settings['load_cpu']} (`taskset -c`)."
            if settings["server_cpu"] is not None
            else "- **Not pinned**: fewer than two usable cores (or no `taskset`)."
        ),
        "- Rate limiters out of the way as in the ingest group ("
        + ", ".join(f"`{name}`" for name in RATE_LIMIT_VARIABLES)
        + f" = {UNLIMITED_RATE}); access log on.",
        "- Durability: once the gateway is idle, its log length must equal the 202s wrk "
        "read plus the requests it abandoned in flight, over every run (warm-ups too), "
        "and the gateway's own 202 count.",
        "- *CPU µs/req* is the gateway's CPU time per request (from `/proc`), which other "
        "work on the machine barely changes; the ratio by CPU per request (configured ÷ "
        "managed) is given beside the req/s ratio for that reason.",
        "",
        "### Target",
        "",
        f"- Ingest with managed API keys within {1 - KEYS_RATIO_TARGET:.0%} of the "
        "`STRONGROOM_API_KEYS` figure, measured in the same run: managed ÷ configured "
        f"2xx req/s ≥ {KEYS_RATIO_TARGET:.2f}.",
    ]
    if report.notes:
        lines += ["", "### Notes", "", *(f"- {note}" for note in report.notes)]
    return "\n".join(lines)


@scenario_group("keys", render_keys, summary=keys_summary)
def keys_group(runner: Runner) -> GroupReport:
    """Managed keys vs configured keys: the "within 10%" acceptance target."""
    scenarios, durability = run_key_rounds(runner)
    means = {kind: KeyMeans.of(kind, scenarios) for kind in KEY_KINDS}
    ratio, cpu_ratio = key_ratios(means[CONFIGURED], means[MANAGED])
    notes = []
    for scenario in scenarios:
        refused, refusal_notes = refusals(scenario.name, scenario.measured)
        notes.extend(refusal_notes)
        if refused.get(401) or refused.get(403):
            notes.append(f"{scenario.name}: the gateway refused the key; the ratio is void.")
        notes.extend(load_generator_note(scenario.name, scenario.cpu))
    widest = max(means.values(), key=lambda m: m.spread)
    if widest.spread >= 1 - KEYS_RATIO_TARGET:
        notes.append(
            f"The {widest.kind} key's rounds differ by {widest.spread:.0%}, at least the "
            f"{1 - KEYS_RATIO_TARGET:.0%} margin the target allows: the run was noisy, and "
            "the ratio by CPU per request is the steadier figure."
        )
    return GroupReport(
        name="keys",
        title="Managed keys vs configured keys",
        scenarios=scenarios,
        targets=[keys_target(scenarios, means[CONFIGURED], means[MANAGED])],
        derived={
            "means": {kind: mean.to_json() for kind, mean in means.items()},
            "managed_to_configured_ratio": round(ratio, 4),
            "managed_to_configured_cpu_per_request_ratio": (
                None if cpu_ratio is None else round(cpu_ratio, 4)
            ),
            "durability": durability,
        },
        settings={
            "warmup_s": runner.warmup_s,
            "duration_s": runner.duration_s,
            "connections": KEYS_LOAD.connections,
            "wrk_threads": 1,
            "server_cpu": runner.server_cpu,
            "load_cpu": runner.load_cpu,
            "access_log": True,
            "rate_limits": dict.fromkeys(RATE_LIMIT_VARIABLES, UNLIMITED_RATE),
            "rounds": KEYS_ROUNDS,
            "order": [s.name for s in scenarios],
            "same_gateway_for_both_keys": True,
            "managed_key": "sr_live_ operator key of tenant default, made with the CLI",
        },
        notes=notes,
        checks={"durability": bool(durability["passed"])},
    )


# --------------------------------------------------------------------------- audit

AUDIT_RECORDS_TARGET: Final = 1_000_000
AUDIT_FILL_BATCH: Final = 1_000
# Appends kept in flight while filling: the writer thread builds and hashes one
# batch while the event loop prepares the next; more gains nothing on one core.
AUDIT_FILL_IN_FLIGHT: Final = 2
AUDIT_CHECKPOINT_EVERY: Final = 100_000
# The target is a million records; stop filling only past this, and say so.
AUDIT_FILL_BUDGET_S: Final = 240.0
AUDIT_CONCURRENCY: Final = 64
AUDIT_APPEND_MAX_RECORDS: Final = 200_000  # per append mode, besides its time bound
AUDIT_PROOF_SIZES: Final = (1_000, 10_000, 100_000, 1_000_000)
AUDIT_PROOFS_PER_SIZE: Final = 200
AUDIT_PROOF_WARMUP: Final = 20
AUDIT_PROOF_SEED: Final = 9162  # fixed, so reruns prove the same positions
AUDIT_LOG_N_FACTOR: Final = 3.0
AUDIT_ACTIONS: Final = ("key.created", "key.revoked", "ratelimit.exceeded", "tenant.updated")
PROOF_KINDS: Final = ("inclusion", "consistency")


@contextlib.contextmanager
def pinned_here(cpu: str | None) -> Iterator[None]:
    """Pin this process to the server's core while the block runs.

    The in-process audit benchmark then runs where a gateway would, on one core;
    threads started inside (the log writer, read workers) inherit the pinning.
    """
    if cpu is None:
        yield
        return
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(cpu)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)


def isolated_settings(data_dir: Path) -> Settings:
    """Default settings on ``data_dir``, ignoring STRONGROOM_* in our environment.

    A ``STRONGROOM_DATABASE_URL`` (say) left in the caller's shell must not send a
    million benchmark records into a real install.
    """
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("STRONGROOM_")}
    try:
        return Settings(data_dir=data_dir)
    finally:
        os.environ.update(saved)


class Stopwatch:
    """Wall time and this process's CPU time (every thread) over one phase."""

    def __init__(self, cpu: str | None) -> None:
        self._cpu = cpu
        self._sample = CpuSample.take(os.getpid(), cpu)
        self._start = time.perf_counter()

    def stop(self, count: int) -> dict[str, Any]:
        """Seconds, count and rate, plus CPU per item and what else ran on the core."""
        wall_s = time.perf_counter() - self._start
        usage = cpu_usage(
            self._sample,
            CpuSample.take(os.getpid(), self._cpu),
            wall_s,
            count,
            self._cpu is not None,
        )
        cpu = None
        if usage is not None:
            cpu = {
                "process_cpu_percent": usage["server_cpu_percent"],
                "cpu_us_per_record": usage["server_cpu_us_per_request"],
                "other_on_core_percent": usage.get("other_on_core_percent"),
                "core_steal_percent": usage.get("core_steal_percent"),
            }
        return {
            "records": count,
            "seconds": round(wall_s, 3),
            "records_per_s": round(count / wall_s, 1) if wall_s > 0 else 0.0,
            "cpu": cpu,
        }


def _percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def _latency_ms(latencies_s: Sequence[float]) -> dict[str, float]:
    return {
        "p50": round(1000 * _percentile(latencies_s, 50), 3),
        "p99": round(1000 * _percentile(latencies_s, 99), 3),
        "max": round(1000 * max(latencies_s, default=0.0), 3),
    }


async def _record_one(state: GatewayState, n: int) -> float:
    """One ``AuditTrail.record`` as a request handler makes it; its latency in seconds."""
    started = time.perf_counter()
    await state.audit.record(
        "key.created",
        actor="bench:audit",
        tenant="default",
        resource=f"keys/k{n:x}",
        details={"role": "operator", "name": "bench"},
    )
    return time.perf_counter() - started


async def _append_for(state: GatewayState, seconds: float, width: int) -> list[float]:
    """Append for ``seconds`` (or ``AUDIT_APPEND_MAX_RECORDS``): ``width`` at a time.

    Width 1 awaits each record before the next, the cost a request pays alone;
    width 64 gathers 64 records per wave, which the writer commits together.
    """
    deadline = time.perf_counter() + seconds
    latencies: list[float] = []
    while len(latencies) < AUDIT_APPEND_MAX_RECORDS and time.perf_counter() < deadline:
        if width == 1:
            latencies.append(await _record_one(state, len(latencies)))
        else:
            wave = (_record_one(state, len(latencies) + i) for i in range(width))
            latencies.extend(await asyncio.gather(*wave))
    return latencies


async def measure_appends(
    state: GatewayState, runner: Runner, width: int, label: str
) -> dict[str, Any]:
    """Warm-up, then a measured, time-bounded run of ``record`` calls ``width`` at a time."""
    await _append_for(state, runner.warmup_s, width)
    watch = Stopwatch(runner.server_cpu)
    latencies = await _append_for(state, runner.duration_s, width)
    figures = watch.stop(len(latencies))
    return {"mode": label, "concurrency": width, **figures, "latency_ms": _latency_ms(latencies)}


def _fill_entries(first: int, count: int) -> list[AuditEntry]:
    """Records shaped like the trail's real ones: an admin acting on a tenant's keys."""
    return [
        AuditEntry(
            action=AUDIT_ACTIONS[n % len(AUDIT_ACTIONS)],
            actor=f"admin:a{n % 97}",
            tenant=f"tenant-{n % 50}",
            ip="203.0.113.7",
            request_id=f"req-{n:x}",
            resource=f"keys/k{n:x}",
            details={"role": "operator", "seq_hint": n},
        )
        for n in range(first, first + count)
    ]


async def fill_log(state: GatewayState, runner: Runner, target: int) -> dict[str, Any]:
    """Append batches until the log holds ``target`` records, signing every 100,000.

    Batches go straight to the store (``AuditLog.append``), not through ``record``,
    because this phase builds a large log for (c) and (d) as fast as the log takes
    it. The pipeline is drained before each checkpoint so it signs exactly a
    multiple of ``AUDIT_CHECKPOINT_EVERY``. Stops early past ``AUDIT_FILL_BUDGET_S``.
    """
    log = state.store.audit
    size = start_size = await log.size()
    watch = Stopwatch(runner.server_cpu)
    started = time.perf_counter()
    pending: set[asyncio.Future[list[AuditRecord]]] = set()
    checkpoint_sizes: list[int] = []
    stopped_early = False
    while size < target:
        if time.perf_counter() - started > AUDIT_FILL_BUDGET_S:
            stopped_early = True
            break
        boundary = min(target, (size // AUDIT_CHECKPOINT_EVERY + 1) * AUDIT_CHECKPOINT_EVERY)
        # Batches end on multiples of AUDIT_FILL_BATCH, whatever (a) left in the log.
        count = min(AUDIT_FILL_BATCH - size % AUDIT_FILL_BATCH, boundary - size)
        pending.add(asyncio.ensure_future(log.append(_fill_entries(size, count))))
        size += count
        if len(pending) >= AUDIT_FILL_IN_FLIGHT:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for future in done:
                future.result()
        if size % AUDIT_CHECKPOINT_EVERY == 0:
            await asyncio.gather(*pending)
            pending.clear()
            signed = await state.audit.checkpoint()
            if signed is None or signed.checkpoint.tree_size != size:
                raise HarnessError(f"the audit checkpoint at {size:,} records was not signed")
            checkpoint_sizes.append(size)
            rate = (size - start_size) / (time.perf_counter() - started)
            print(f"   audit log: {size:,} records ({rate:,.0f}/s), checkpoint signed", flush=True)
    await asyncio.gather(*pending)
    figures = watch.stop(size - start_size)
    final = await log.size()
    if final != size:
        raise HarnessError(f"the audit log holds {final:,} records, expected {size:,}")
    return {
        "batch": AUDIT_FILL_BATCH,
        "in_flight": AUDIT_FILL_IN_FLIGHT,
        "start_size": start_size,
        "final_size": final,
        "target_size": target,
        "stopped_by_time_budget": stopped_early,
        "checkpoint_sizes": checkpoint_sizes,
        **figures,
    }


async def time_verify(state: GatewayState, runner: Runner) -> dict[str, Any]:
    """``AuditTrail.verify`` over the whole log: every record re-hashed, every checkpoint."""
    watch = Stopwatch(runner.server_cpu)
    result = await state.audit.verify()
    figures = watch.stop(result.records)
    return {
        "ok": result.ok,
        "finding": None if result.finding is None else str(result.finding),
        "checkpoints_checked": result.checkpoints,
        "unsigned_tail": result.unsigned_tail,
        **figures,
    }


async def _time_proofs(
    state: GatewayState, kind: str, size: int, rng: random.Random
) -> dict[str, Any]:
    """Mean time and node count of random proofs of one kind against a tree of ``size``.

    A few untimed proofs first, so thread-pool start-up is not charged to the smallest size.
    """
    log = state.store.audit

    def one() -> Awaitable[list[bytes]]:
        if kind == "inclusion":
            return log.inclusion_proof(rng.randrange(size), size)
        return log.consistency_proof(rng.randrange(1, size), size)

    for _ in range(AUDIT_PROOF_WARMUP):
        await one()
    times: list[float] = []
    nodes: list[int] = []
    for _ in range(AUDIT_PROOFS_PER_SIZE):
        started = time.perf_counter()
        proof = await one()
        times.append(time.perf_counter() - started)
        nodes.append(len(proof))
    return {
        "proofs": len(times),
        "mean_us": round(1e6 * _mean(times), 1),
        "p50_us": round(1e6 * _percentile(times, 50), 1),
        "p99_us": round(1e6 * _percentile(times, 99), 1),
        "nodes_mean": round(_mean([float(n) for n in nodes]), 2),
        "nodes_min": min(nodes),
        "nodes_max": max(nodes),
    }


async def time_proofs(state: GatewayState, sizes: Sequence[int]) -> list[dict[str, Any]]:
    """Inclusion and consistency proofs at each tree size, from the stored nodes."""
    rng = random.Random(AUDIT_PROOF_SEED)
    rows = []
    for size in sizes:
        row: dict[str, Any] = {"tree_size": size, "log2_n": round(math.log2(size), 2)}
        for kind in PROOF_KINDS:
            row[kind] = await _time_proofs(state, kind, size, rng)
        rows.append(row)
    return rows


def proof_sizes(reached: int) -> list[int]:
    """The issue's sizes that the log reached, plus the reached size if it fell short."""
    sizes = [size for size in AUDIT_PROOF_SIZES if size <= reached]
    if reached < AUDIT_PROOF_SIZES[-1] and reached > 1 and reached not in sizes:
        sizes.append(reached)
    return sizes


async def measure_audit(runner: Runner, data_dir: Path) -> dict[str, Any]:
    """Phases (a) to (d) on one store opened as the CLI opens it; closed in ``finally``."""
    state = await open_gateway(
        isolated_settings(data_dir), Metrics(), get_logger("strongroom.bench")
    )
    try:
        print("   audit: sequential appends ...", flush=True)
        sequential = await measure_appends(state, runner, 1, "sequential, each awaited")
        print(f"   audit: {AUDIT_CONCURRENCY} concurrent appenders ...", flush=True)
        concurrent = await measure_appends(
            state, runner, AUDIT_CONCURRENCY, f"{AUDIT_CONCURRENCY} concurrent (gather waves)"
        )
        print(f"   audit: filling to {AUDIT_RECORDS_TARGET:,} records ...", flush=True)
        fill = await fill_log(state, runner, AUDIT_RECORDS_TARGET)
        print("   audit: verifying ...", flush=True)
        verify = await time_verify(state, runner)
        print("   audit: proofs ...", flush=True)
        proofs = await time_proofs(state, proof_sizes(fill["final_size"]))
    finally:
        await state.store.aclose()
    return {
        "appends": [sequential, concurrent],
        "fill": fill,
        "verify": verify,
        "proofs": proofs,
    }


def _log_n_target(kind: str, proofs: Sequence[Mapping[str, Any]]) -> TargetCheck:
    """Proof time at the largest size within ``AUDIT_LOG_N_FACTOR`` × the time at 1,000.

    log2(1,000,000) / log2(1,000) = 2: O(log n) proofs take about twice as long at
    a million records; O(n) ones would take a thousand times as long.
    """
    smallest, largest = proofs[0], proofs[-1]
    first, last = smallest[kind]["mean_us"], largest[kind]["mean_us"]
    factor = last / first if first else math.inf
    short = largest["tree_size"] < AUDIT_RECORDS_TARGET
    return TargetCheck(
        f"{kind.capitalize()} proofs O(log n)",
        f"mean µs per proof at {AUDIT_RECORDS_TARGET:,} records "
        f"< {AUDIT_LOG_N_FACTOR:g}× that at {smallest['tree_size']:,}",
        f"{factor:.2f}× ({_fmt(last)} µs at {largest['tree_size']:,}, "
        f"{_fmt(first)} µs at {smallest['tree_size']:,}; "
        f"{largest[kind]['nodes_mean']:.1f} vs {smallest[kind]['nodes_mean']:.1f} nodes)",
        factor < AUDIT_LOG_N_FACTOR and not short,
        f"the log reached only {largest['tree_size']:,} records" if short else None,
    )


def _cells(values: Sequence[str]) -> str:
    return "| " + " | ".join(values) + " |"


def audit_append_table(report: GroupReport) -> str:
    """(a) and (b): appends through ``record`` and the bulk fill, one row each."""
    rows = [
        "| Appends | Records | Seconds | Records/s | p50 ms | p99 ms | CPU µs/record "
        "| Process CPU | Other on its core |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    fill = report.derived["fill"]
    fill_label = f"bulk fill, {fill['batch']:,} per `AuditLog.append` call"
    for phase in [*report.derived["appends"], {**fill, "mode": fill_label}]:
        cpu = phase.get("cpu") or {}
        latency = phase.get("latency_ms")
        per_record = cpu.get("cpu_us_per_record")
        busy = cpu.get("process_cpu_percent")
        other = cpu.get("other_on_core_percent")
        rows.append(
            _cells(
                [
                    phase["mode"],
                    f"{phase['records']:,}",
                    f"{phase['seconds']:.1f}",
                    _fmt(phase["records_per_s"]),
                    f"{latency['p50']:.2f}" if latency else "–",
                    f"{latency['p99']:.2f}" if latency else "–",
                    "n/a" if per_record is None else _fmt(per_record, 1),
                    "n/a" if busy is None else f"{busy:.0f}%",
                    "n/a" if other is None else f"{other:.0f}%",
                ]
            )
        )
    return "\n".join(rows)


def audit_verify_table(report: GroupReport) -> str:
    """(c): one row for ``AuditTrail.verify`` over the whole log."""
    v = report.derived["verify"]
    cpu = v.get("cpu") or {}
    per_record = cpu.get("cpu_us_per_record")
    result = "ok" if v["ok"] else f"**FAIL**: {v['finding']}"
    return "\n".join(
        [
            "| Verify | Records | Checkpoints checked | Seconds | Records/s | CPU µs/record "
            "| Result |",
            "|---|--:|--:|--:|--:|--:|---|",
            _cells(
                [
                    "`AuditTrail.verify()`",
                    f"{v['records']:,}",
                    str(v["checkpoints_checked"]),
                    f"{v['seconds']:.1f}",
                    _fmt(v["records_per_s"]),
                    "n/a" if per_record is None else _fmt(per_record, 1),
                    result,
                ]
            ),
        ]
    )


def audit_proof_table(report: GroupReport) -> str:
    """(d): mean time and node count per proof at each tree size."""
    rows = [
        "| Tree size | log2 n | Inclusion µs (mean / p50 / p99) | Inclusion nodes (mean, min–max) "
        "| Consistency µs (mean / p50 / p99) | Consistency nodes (mean, min–max) |",
        "|--:|--:|--:|--:|--:|--:|",
    ]
    for row in report.derived["proofs"]:
        cells = [f"{row['tree_size']:,}", f"{row['log2_n']:.1f}"]
        for kind in PROOF_KINDS:
            p = row[kind]
            cells += [
                f"{_fmt(p['mean_us'])} / {_fmt(p['p50_us'])} / {_fmt(p['p99_us'])}",
                f"{p['nodes_mean']:.1f} ({p['nodes_min']}–{p['nodes_max']})",
            ]
        rows.append(_cells(cells))
    return "\n".join(rows)


def audit_summary(report: GroupReport) -> str:
    return "\n\n".join(
        [
            audit_append_table(report),
            audit_verify_table(report),
            audit_proof_table(report),
            target_table(report.targets),
        ]
    )


def render_audit(report: GroupReport) -> str:
    """The "Audit trail" section; run.py owns it between the markers."""
    settings = report.settings
    fill = report.derived["fill"]
    lines = [
        "## Audit trail",
        "",
        "<!-- Generated by `python -m benchmarks.run --only audit`; edits here are "
        "overwritten. -->",
        "",
        f"Measured {report.date_utc} on: {machine_line(report)}",
        "",
        f"In-process, no HTTP: one store on a fresh data dir, opened with "
        f"`open_gateway` as the CLI opens it. The whole group took "
        f"{report.derived['group_seconds']:.0f} s; the log ended with "
        f"{fill['final_size']:,} records ({report.derived['database_bytes'] / 2**20:,.0f} MiB "
        "database, stream copies included).",
        "",
        audit_append_table(report),
        "",
        audit_verify_table(report),
        "",
        audit_proof_table(report),
        "",
        target_table(report.targets),
        "",
        "### Reproduce",
        "",
        "```sh",
        ".venv/bin/python -m benchmarks.run --only audit",
        "```",
        "",
        "### Method",
        "",
        (
            f"- The harness process is pinned to core {settings['cpu']} (`sched_setaffinity`) "
            "for the group, with the store's writer thread and read workers: one core, as "
            "one gateway process has. *CPU µs/record* is the process's CPU time (all "
            "threads) per record; *Other on its core* is what other processes took from "
            "that core."
            if settings["cpu"] is not None
            else "- **Not pinned**: fewer than two usable cores (or no `taskset`)."
        ),
        "- Settings are the defaults (any `STRONGROOM_*` variable in the environment is "
        "ignored): SQLite with `synchronous=FULL` behind the group-commit writer, so every "
        "append returns only after its commit.",
        f"- (a) `AuditTrail.record(...)`, the call request handlers make: one at a time, "
        f"each awaited (a commit per record, the cost a lone request pays), then "
        f"{settings['concurrency']} at a time with `asyncio.gather` in waves (the writer "
        f"commits a wave together). Each: {settings['warmup_s']} s warm-up, then "
        f"{settings['duration_s']} s measured (at most {settings['append_max_records']:,} "
        "records); latency is per `record` call.",
        f"- (b) The log is then filled to {settings['target_records']:,} records with "
        f"`AuditLog.append` in lists of {settings['fill_batch']:,} `AuditEntry` objects "
        f"({settings['fill_in_flight']} calls in flight), and a signed checkpoint "
        f"(`AuditTrail.checkpoint()`) every {settings['checkpoint_every']:,} records. Each "
        "record is built, hashed into the Merkle tree and copied to the `payments.audit` "
        f"topic in the same transaction. Filling stops early only past "
        f"{settings['fill_budget_s']:.0f} s, and the section says so.",
        "- (c) `AuditTrail.verify()` reads every record back, re-parses and re-hashes it, "
        "checks the hash chain, rebuilds the tree and checks every signed checkpoint "
        "against it; it must come back ok.",
        f"- (d) `AuditLog.inclusion_proof(seq, n)` and `consistency_proof(m, n)` at each "
        f"tree size n, {settings['proofs_per_size']} random proofs of each kind (seed "
        f"{settings['proof_seed']}, after {settings['proof_warmup']} untimed ones), each "
        "timed as a caller sees it (the size check and node reads run in a worker thread). "
        "A proof has about log2 n nodes, each a lookup in the stored node table.",
        "",
        "### Targets",
        "",
        f"- No throughput target is set for the audit trail. Proofs must be "
        f"O(log n): counted as met when the mean time per proof at "
        f"{settings['target_records']:,} records is under {AUDIT_LOG_N_FACTOR:g}× the time "
        "at 1,000 (log2 n doubles between them; O(n) would multiply it by a thousand).",
    ]
    if report.notes:
        lines += ["", "### Notes", "", *(f"- {note}" for note in report.notes)]
    return "\n".join(lines)


def _database_bytes(data_dir: Path) -> int:
    """The SQLite file and its WAL, if one is left: what a million records cost on disk."""
    return sum(path.stat().st_size for path in data_dir.glob("strongroom.db*") if path.is_file())


def audit_notes(figures: Mapping[str, Any]) -> list[str]:
    """What the tables do not say: early stops, contention, how proof sizes grew."""
    notes = []
    fill = figures["fill"]
    if fill["stopped_by_time_budget"]:
        notes.append(
            f"Filling stopped at {fill['final_size']:,} records after "
            f"{fill['seconds']:.0f} s, past the {AUDIT_FILL_BUDGET_S:.0f} s budget, at "
            f"{_fmt(fill['records_per_s'])} records/s; proofs were timed up to that size."
        )
    else:
        notes.append(
            f"Filling from {fill['start_size']:,} to {fill['final_size']:,} records took "
            f"{fill['seconds']:.0f} s, signing a checkpoint at each of "
            f"{', '.join(f'{size:,}' for size in fill['checkpoint_sizes']) or 'none'} records."
        )
    sequential = figures["appends"][0]
    notes.append(
        f"One record at a time is one commit (one fsync) per record: "
        f"{_fmt(sequential['records_per_s'])} records/s means "
        f"{1000 / max(sequential['records_per_s'], 1e-9):.2f} ms per audited request, "
        "which group commit amortises when requests arrive together."
    )
    for phase in [*figures["appends"], fill, figures["verify"]]:
        other = (phase.get("cpu") or {}).get("other_on_core_percent")
        if other is not None and other > CONTENDED_SHARE:
            name = phase.get("mode") or ("fill" if "batch" in phase else "verify")
            notes.append(
                f"{name}: other processes took {other:.0f}% of the core; CPU µs/record is "
                "the steadier figure."
            )
    proofs = figures["proofs"]
    if len(proofs) >= 2:
        first, last = proofs[0], proofs[-1]
        growth = last["tree_size"] / first["tree_size"]
        notes.append(
            f"From {first['tree_size']:,} to {last['tree_size']:,} records ({growth:,.0f}× "
            f"more), inclusion proofs grew from {first['inclusion']['nodes_mean']:.1f} to "
            f"{last['inclusion']['nodes_mean']:.1f} nodes and "
            f"{last['inclusion']['mean_us'] / first['inclusion']['mean_us']:.2f}× in time; "
            f"consistency proofs from {first['consistency']['nodes_mean']:.1f} to "
            f"{last['consistency']['nodes_mean']:.1f} nodes and "
            f"{last['consistency']['mean_us'] / first['consistency']['mean_us']:.2f}× in time."
        )
    return notes


@scenario_group("audit", render_audit, summary=audit_summary)
def audit_group(runner: Runner) -> GroupReport:
    """The audit trail in-process: append rates, a million-record log, verify and proofs."""
    started = time.perf_counter()
    data_dir = Path(tempfile.mkdtemp(prefix="audit-", dir=runner.work_dir)) / "data"
    try:
        with pinned_here(runner.server_cpu):
            figures = asyncio.run(measure_audit(runner, data_dir))
        database_bytes = _database_bytes(data_dir)
    finally:
        # A million records take about a gigabyte; free it before the next group.
        shutil.rmtree(data_dir.parent, ignore_errors=True)
    proofs = figures["proofs"]
    targets = [_log_n_target(kind, proofs) for kind in PROOF_KINDS] if len(proofs) >= 2 else []
    verify = figures["verify"]
    return GroupReport(
        name="audit",
        title="Audit trail",
        scenarios=[],
        targets=targets,
        derived={
            **figures,
            "database_bytes": database_bytes,
            "group_seconds": round(time.perf_counter() - started, 1),
        },
        settings={
            "warmup_s": runner.warmup_s,
            "duration_s": runner.duration_s,
            "cpu": runner.server_cpu,
            "concurrency": AUDIT_CONCURRENCY,
            "append_max_records": AUDIT_APPEND_MAX_RECORDS,
            "target_records": AUDIT_RECORDS_TARGET,
            "fill_batch": AUDIT_FILL_BATCH,
            "fill_in_flight": AUDIT_FILL_IN_FLIGHT,
            "checkpoint_every": AUDIT_CHECKPOINT_EVERY,
            "fill_budget_s": AUDIT_FILL_BUDGET_S,
            "proofs_per_size": AUDIT_PROOFS_PER_SIZE,
            "proof_warmup": AUDIT_PROOF_WARMUP,
            "proof_seed": AUDIT_PROOF_SEED,
            "synchronous": "FULL",
        },
        notes=audit_notes(figures),
        checks={
            "audit_verify_ok": bool(verify["ok"]),
            "audit_verify_saw_every_record": verify["records"] == figures["fill"]["final_size"],
        },
    )


# --------------------------------------------------------------------------- output


def markers(name: str) -> tuple[str, str]:
    return f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"


DOC_HEADER: Final = """# Benchmarks

How fast the gateway is, measured by `make bench` (`python -m benchmarks.run`).
Each section between `<!-- bench:NAME:start -->` and `<!-- bench:NAME:end -->`
markers is regenerated by the harness; text outside the markers is left alone.
Run one group with `python -m benchmarks.run --only NAME`.

Figures are from one machine at one time: compare them with the bare-endpoint
baseline measured in the same run, not with figures from other machines.
"""


def update_doc(path: Path, name: str, section: str) -> None:
    """Replace the text between ``name``'s markers, appending the block if it is new."""
    start, end = markers(name)
    block = f"{start}\n{section}\n{end}"
    text = path.read_text() if path.exists() else DOC_HEADER
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def write_results(path: Path, reports: Sequence[GroupReport]) -> None:
    """Merge into latest.json: groups not run this time keep their last figures."""
    existing: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        existing = json.loads(path.read_text())
    groups = existing.get("groups", {}) if isinstance(existing.get("groups"), dict) else {}
    for report in reports:
        groups[report.name] = report.to_json()
    payload = {
        "schema": 1,
        "updated_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "groups": groups,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Turn SIGTERM into an exception so the finally blocks stop the servers.
    raise SystemExit(128 + signum)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(GROUPS),
        help="run only this scenario group (repeatable); default: all",
    )
    parser.add_argument("--warmup", type=int, default=2, help="warm-up seconds per scenario")
    parser.add_argument("--duration", type=int, default=10, help="measured seconds per scenario")
    parser.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    parser.add_argument(
        "--fail-on-target",
        action="store_true",
        help="exit 1 when a performance target is missed (durability failures always do)",
    )
    return parser.parse_args(argv)


# Groups in other modules register themselves on import. They import from
# ``benchmarks.run``; run as ``python -m benchmarks.run`` this file is ``__main__``,
# so it is entered under that name first, or they would load and fill a second copy.
sys.modules.setdefault("benchmarks.run", sys.modules[__name__])
import benchmarks.postgres  # noqa: E402
import benchmarks.risk  # noqa: E402
import benchmarks.streams  # noqa: E402
import benchmarks.vault  # noqa: E402, F401


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected groups; exit 1 on lost events (or missed targets if asked), 2 on error."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    try:
        tool("wrk")
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    names = list(dict.fromkeys(args.only or GROUPS))
    reports: list[GroupReport] = []
    try:
        with tempfile.TemporaryDirectory(prefix="strongroom-bench-") as work:
            runner = Runner(warmup_s=args.warmup, duration_s=args.duration, work_dir=Path(work))
            machine = machine_info(Path(work))
            for name in names:
                before = load_average()
                print(f"== {name}: running (load average {before}) ...", flush=True)
                report = GROUPS[name].run(runner)
                report.machine = machine
                report.load_before, report.load_after = before, load_average()
                report.date_utc = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
                reports.append(report)
                print(f"\n## {report.title}\n\n{GROUPS[name].summary(report)}\n")
                print(f"Machine: {machine_line(report)}\n", flush=True)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_results(RESULTS_PATH, reports)
    if not args.no_doc:
        for report in reports:
            update_doc(DOC_PATH, report.name, GROUPS[report.name].render(report))
    print(
        f"Wrote {RESULTS_PATH.relative_to(ROOT)}"
        + ("" if args.no_doc else f" and {DOC_PATH.relative_to(ROOT)}")
    )
    if not all(report.durable for report in reports):
        print("FAIL: a durability check failed", file=sys.stderr)
        return 1
    if args.fail_on_target and not all(report.targets_met for report in reports):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
