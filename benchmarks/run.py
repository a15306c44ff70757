"""Benchmark harness: ``python -m benchmarks.run [--only GROUP ...]`` (``make bench``).

Each scenario group is a function registered with ``@scenario_group``; it starts
the servers it needs, drives them with ``wrk`` and returns a ``GroupReport``. The
harness then merges every report into ``benchmarks/results/latest.json`` and
regenerates that group's section of ``docs/benchmarks.md`` between its markers,
leaving the rest of the document (and other groups' sections) as they were.

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
import contextlib
import importlib.util
import json
import os
import platform
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, Final

import httpx
from prometheus_client.parser import text_string_to_metric_families

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

    def wrk(self, url: str, load: Load, seconds: int) -> WrkRun:
        """One wrk run with the ingest script; the key reaches Lua through the environment."""
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
        env = {**os.environ, "BENCH_API_KEY": self.api_key}
        done = subprocess.run(
            argv, capture_output=True, text=True, env=env, timeout=seconds + 60, check=False
        )
        if done.returncode != 0:
            raise HarnessError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return WrkRun.parse(done.stdout)

    def warm_and_measure(
        self, url: str, load: Load, server_pid: int
    ) -> tuple[WrkRun, WrkRun, dict[str, Any] | None]:
        """Warm-up run, then the measured run with the server's CPU use around it."""
        warmup = self.wrk(url, load, self.warmup_s)
        before = CpuSample.take(server_pid, self.server_cpu)
        children_before = _children_cpu_s()
        measured = self.wrk(url, load, self.duration_s)
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
    """One issue target, the figure it was judged on, and the verdict."""

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

    @property
    def durable(self) -> bool:
        return all(s.durability is None or s.durability["passed"] for s in self.scenarios)

    @property
    def targets_met(self) -> bool:
        return all(target.passed for target in self.targets)

    def to_json(self) -> dict[str, Any]:
        return {
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


def _fmt(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def _cpu_cells(cpu: Mapping[str, Any] | None) -> str:
    if cpu is None:
        return "n/a | n/a | n/a"
    other = cpu.get("other_on_core_percent")
    per_request = cpu["server_cpu_us_per_request"]
    return (
        f"{cpu['server_cpu_percent']:.0f}% | "
        + (f"{other:.0f}%" if other is not None else "n/a")
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


@dataclass(frozen=True)
class ScenarioGroup:
    name: str
    run: GroupRunner
    render: Callable[[GroupReport], str]


GROUPS: dict[str, ScenarioGroup] = {}


def scenario_group(
    name: str, render: Callable[[GroupReport], str]
) -> Callable[[GroupRunner], GroupRunner]:
    """Register a group for ``--only NAME``; ``render`` writes its doc section body."""

    def register(run: GroupRunner) -> GroupRunner:
        GROUPS[name] = ScenarioGroup(name, run, render)
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
            if b'"event": "request"' in line:
                count += 1
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


def single_to_bare_ratio(single: ScenarioResult, bare: ScenarioResult) -> float:
    """The issue's ratio: gateway 2xx req/s over bare req/s, same load, same core."""
    return single.measured.ok_per_s / bare.measured.ok_per_s if bare.measured.ok else 0.0


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


def _contended(scenario: ScenarioResult) -> bool:
    return bool((scenario.cpu or {}).get("other_on_core_percent", 0) > CONTENDED_SHARE)


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
        "unreliable: other processes took "
        f"{(bare.cpu or {}).get('other_on_core_percent', 0):.0f}% of the bare server's core "
        f"and {(single.cpu or {}).get('other_on_core_percent', 0):.0f}% of the gateway's; "
        f"by CPU per request it is {cpu_ratio:.1%}"
    )


def ingest_targets(
    single: ScenarioResult, bare: ScenarioResult, batches: Sequence[ScenarioResult]
) -> list[TargetCheck]:
    """The issue's targets, judged on 2xx-only figures and on the durability check."""
    checks = [
        TargetCheck(
            f"Batches of 100, {batch.load.connections} connections",
            f"≥ {BATCH_EVENTS_TARGET:,} durable events/s",
            f"{_fmt(batch.events_per_s)} events/s"
            + ("" if batch.durability and batch.durability["passed"] else " (durability FAIL)"),
            batch.events_per_s >= BATCH_EVENTS_TARGET
            and bool(batch.durability and batch.durability["passed"]),
        )
        for batch in batches
    ]
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
        )
    )
    return checks


def render_ingest(report: GroupReport) -> str:
    """The whole "Ingest (issue targets)" section; run.py owns it between the markers."""
    settings = report.settings
    lines = [
        "## Ingest (issue targets)",
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
        "(uvicorn, uvloop, httptools), SQLite log with `synchronous=FULL`: a 202 "
        "means the events were committed.",
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
        "share of its core, *Other on its core* the share other processes took from it, and "
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
    ]
    if report.notes:
        lines += ["", "### Notes", "", *(f"- {note}" for note in report.notes)]
    return "\n".join(lines)


@scenario_group("ingest", render_ingest)
def ingest(runner: Runner) -> GroupReport:
    """Single events and batches of 100 into the gateway, and the bare-endpoint ceiling."""
    bare = run_bare_scenario(runner, "bare-single-c64", Load(64, 0))
    single = run_gateway_scenario(runner, "single-c64", Load(64, 0))
    batches = [
        run_gateway_scenario(runner, f"batch100-c{connections}", Load(connections, 100))
        for connections in (16, 64)
    ]
    scenarios = [single, *batches, bare]
    cpu_ratio = single_to_bare_cpu_ratio(single, bare)
    notes = []
    for scenario in scenarios:
        refused = {code: n for code, n in scenario.measured.statuses.items() if code >= 300}
        if refused or scenario.measured.socket_errors:
            notes.append(
                f"{scenario.name}: non-2xx responses by status {refused}, "
                f"socket errors {scenario.measured.errors}."
            )
        cpu = scenario.cpu or {}
        ceiling = cpu.get("one_core_ceiling_requests_per_s")
        if ceiling:
            notes.append(
                f"{scenario.name}: at {cpu['server_cpu_us_per_request']:,.0f} CPU µs "
                f"per request, one uncontended core would allow about {ceiling:,} req/s "
                f"({ceiling * scenario.load.events_per_ok:,} events/s) if the server stayed "
                "CPU-bound."
            )
        wrk_cpu = cpu.get("load_generator_cpu_percent", 0)
        if wrk_cpu > 90:
            notes.append(
                f"{scenario.name}: wrk used {wrk_cpu:.0f}% of its core; the load generator, "
                "not the server, may have set the pace."
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
        title="Ingest (issue targets)",
        scenarios=scenarios,
        targets=ingest_targets(single, bare, batches),
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
        },
        notes=notes,
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
                print(f"\n## {report.title}\n\n{scenario_table(report.scenarios)}\n")
                print(target_table(report.targets) + "\n")
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
