"""The ``postgres`` benchmark group: ingest on the PostgreSQL store next to SQLite.

``benchmarks/run.py`` imports this module so that ``@scenario_group`` registers it;
run it alone with ``python -m benchmarks.run --only postgres``. One run measures
the ingest group's wrk load (``benchmarks/ingest.lua``, every event id new) at 64
connections, single events and batches of 100, against two gateways started the
same way but for their store:

* SQLite: ``strongroom serve --data-dir <fresh dir>``, the default store.
* PostgreSQL: the same with ``STRONGROOM_DATABASE_URL`` naming a fresh database on
  the server at ``STRONGROOM_BENCH_POSTGRES`` (default
  ``postgresql://postgres@127.0.0.1:5432/postgres``), dropped afterwards.

Each scenario has a gateway (and for PostgreSQL a database) of its own, so each
durability check stands alone: the ingest group's count check (``durability_check``)
and, once the gateway has stopped, a count of the stored records of the topic, of
their distinct event ids and of their offsets, so that every acknowledged id is in
the log exactly once.

Every process and database made here is stopped or dropped in a ``finally``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from benchmarks.run import (
    CONTENDED_SHARE,
    EVENTS_ROUTE,
    RATE_LIMIT_VARIABLES,
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
    _filesystem_of,
    _fmt,
    access_log_lines,
    cpu_usage,
    durability_check,
    free_port,
    gateway_env,
    load_generator_note,
    lost_share,
    machine_line,
    refusals,
    scenario_group,
    scenario_table,
    server,
    settled_metrics,
)
from strongroom.adapters.sqlite import chunks

POSTGRES_SERVER: Final = os.environ.get(
    "STRONGROOM_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
SQLITE: Final = "SQLite"
POSTGRES: Final = "PostgreSQL"
STORES: Final = (SQLITE, POSTGRES)
#: The ingest group's loads at 64 connections; run in this order, each load on both
#: stores one after the other, so slow drift on the machine falls on both.
LOADS: Final = {"single-c64": Load(64, 0), "batch100-c64": Load(64, 100)}
#: The server settings that decide what a commit costs, reported with the figures.
SERVER_SETTINGS: Final = (
    "server_version",
    "fsync",
    "synchronous_commit",
    "wal_sync_method",
    "full_page_writes",
    "commit_delay",
    "shared_buffers",
    "max_connections",
)
_STORED_QUERY: Final = (
    'SELECT count(*), count(DISTINCT record_id), min("offset"), max("offset") '
    "FROM stream_records WHERE topic = $1"
)


# --------------------------------------------------------------------------- database


def _asyncpg() -> Any:
    try:
        import asyncpg
    except ModuleNotFoundError as exc:
        raise HarnessError(
            "the postgres group needs asyncpg: pip install -e '.[postgres]'"
        ) from exc
    return asyncpg


async def _connect(url: str) -> Any:
    asyncpg = _asyncpg()
    try:
        return await asyncpg.connect(url, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        raise HarnessError(
            f"PostgreSQL at {url} is unreachable ({exc}); set STRONGROOM_BENCH_POSTGRES"
        ) from exc


async def _admin(statement: str) -> None:
    connection = await _connect(POSTGRES_SERVER)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def _database_url(name: str) -> str:
    return f"{POSTGRES_SERVER.rsplit('/', 1)[0]}/{name}"


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """The URL of a new, empty database, dropped on leaving (sessions still on it too)."""
    name = "strongroom_bench_" + uuid.uuid4().hex[:12]
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield _database_url(name)
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _server_settings() -> dict[str, Any]:
    connection = await _connect(POSTGRES_SERVER)
    try:
        shown = {name: await connection.fetchval(f"SHOW {name}") for name in SERVER_SETTINGS}
        with contextlib.suppress(_asyncpg().PostgresError):
            # Superusers only: where the WAL is flushed decides what fsync costs.
            directory = await connection.fetchval("SHOW data_directory")
            shown["data_directory_filesystem"] = _filesystem_of(Path(directory))
        return shown
    finally:
        await connection.close()


def _stored_counts(row: Sequence[Any]) -> dict[str, Any]:
    records, distinct, lowest, highest = (int(v) if v is not None else None for v in row)
    return {
        "stored_records": records,
        "distinct_event_ids": distinct,
        "offsets_dense_from_0": records == 0 or (lowest == 0 and highest == (records or 0) - 1),
    }


async def _stored_postgres(url: str) -> dict[str, Any]:
    connection = await _connect(url)
    try:
        row = await connection.fetchrow(_STORED_QUERY, TOKENIZED_TOPIC)
    finally:
        await connection.close()
    return _stored_counts(tuple(row))


def _stored_sqlite(path: Path) -> dict[str, Any]:
    # Read-only, after the gateway has stopped: nothing is in flight any more.
    # The embedded log keeps runs of records a row (adapters.sqlite.chunks).
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
        stored = list(chunks.topic_ids(connection, TOKENIZED_TOPIC, 0, 2**63 - 1))
    offsets = [offset for _, _, offset in stored]
    row = (
        len(stored),
        len({record_id for _, record_id, _ in stored}),
        min(offsets, default=None),
        max(offsets, default=None),
    )
    return _stored_counts(row)


# --------------------------------------------------------------------------- cpu


def _backend_ticks(database: str) -> int:
    """CPU ticks used so far by the server processes serving ``database``.

    Backends are found by their process title (``postgres: ... USER DATABASE
    HOST(PORT) ...``). One that exits between two samples takes its ticks with it,
    so the difference is a lower bound; the gateway's pool keeps its connections,
    so it is close.
    """
    total = 0
    needle = f" {database} ".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            title = (entry / "cmdline").read_bytes()
            if not title.startswith(b"postgres:") or needle not in title:
                continue
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])
    return total


def warm_and_measure(
    runner: Runner, url: str, load: Load, server_pid: int, database: str | None
) -> tuple[WrkRun, WrkRun, dict[str, Any] | None]:
    """``Runner.warm_and_measure``, also sampling the PostgreSQL backends' CPU."""
    warmup = runner.wrk(url, load, runner.warmup_s)
    before = CpuSample.take(server_pid, runner.server_cpu)
    backends_before = _backend_ticks(database) if database else 0
    children_before = _children_cpu_s()
    measured = runner.wrk(url, load, runner.duration_s)
    wrk_cpu_s = _children_cpu_s() - children_before
    backends_after = _backend_ticks(database) if database else 0
    after = CpuSample.take(server_pid, runner.server_cpu)
    pinned = runner.server_cpu is not None
    cpu = cpu_usage(before, after, measured.duration_s, measured.requests, pinned)
    if cpu is not None and measured.duration_s > 0:
        cpu["load_generator_cpu_percent"] = round(100 * wrk_cpu_s / measured.duration_s, 1)
        if database:
            backend_s = (backends_after - backends_before) / os.sysconf("SC_CLK_TCK")
            cpu["postgres_cpu_percent"] = round(100 * backend_s / measured.duration_s, 1)
            cpu["postgres_cpu_us_per_request"] = (
                round(1e6 * backend_s / measured.requests, 1) if measured.requests else None
            )
    return warmup, measured, cpu


# --------------------------------------------------------------------------- scenarios


def _slug(store: str) -> str:
    return "pg" if store == POSTGRES else "sqlite"


def run_store_scenario(runner: Runner, store: str, load_name: str) -> ScenarioResult:
    """A fresh gateway (and for PostgreSQL a fresh database) for one load."""
    load = LOADS[load_name]
    name = f"{_slug(store)}-{load_name}"
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    data_dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=runner.work_dir))
    log_path = runner.work_dir / f"{name}.log"
    env = gateway_env(runner.api_key)
    argv = [sys.executable, "-m", "strongroom", "serve", "--port", str(port)]
    argv += ["--data-dir", str(data_dir)]
    with contextlib.ExitStack() as stack:
        database_url = None
        if store == POSTGRES:
            database_url = stack.enter_context(fresh_database())
            env["STRONGROOM_DATABASE_URL"] = database_url
        with server(
            argv,
            env=env,
            log_path=log_path,
            probe_url=base_url + "/health",
            probe_status=200,
            cpu=runner.server_cpu,
        ) as process:
            database = database_url.rsplit("/", 1)[1] if database_url else None
            warmup, measured, cpu = warm_and_measure(
                runner, base_url + EVENTS_ROUTE, load, process.pid, database
            )
            metrics = settled_metrics(base_url)
        if database_url is not None:
            stored = asyncio.run(_stored_postgres(database_url))
        else:
            stored = _stored_sqlite(data_dir / "strongroom.db")
    durability = durability_check(load, (warmup, measured), metrics)
    durability["access_log_lines"] = access_log_lines(log_path)
    durability.update(stored)
    once = (
        stored["stored_records"] == stored["distinct_event_ids"] == durability["log_length"]
        and stored["offsets_dense_from_0"]
    )
    durability["every_id_stored_once"] = once
    durability["passed"] = bool(durability["passed"] and once)
    return ScenarioResult(name, store, load, warmup, measured, cpu, durability)


# --------------------------------------------------------------------------- report


def _pairs(scenarios: Sequence[ScenarioResult]) -> list[tuple[str, ScenarioResult, ScenarioResult]]:
    by_name = {s.name: s for s in scenarios}
    return [
        (load_name, by_name[f"sqlite-{load_name}"], by_name[f"pg-{load_name}"])
        for load_name in LOADS
        if f"sqlite-{load_name}" in by_name and f"pg-{load_name}" in by_name
    ]


def _cost(scenario: ScenarioResult, key: str) -> str:
    value = (scenario.cpu or {}).get(key)
    return "n/a" if value is None else _fmt(value)


def comparison_rows(scenarios: Sequence[ScenarioResult]) -> list[dict[str, Any]]:
    rows = []
    for load_name, sqlite_run, pg_run in _pairs(scenarios):
        rows.append(
            {
                "load": load_name,
                "events_per_request": sqlite_run.load.events_per_ok,
                "sqlite_events_per_s": round(sqlite_run.events_per_s, 1),
                "postgres_events_per_s": round(pg_run.events_per_s, 1),
                "postgres_to_sqlite_ratio": (
                    round(pg_run.events_per_s / sqlite_run.events_per_s, 4)
                    if sqlite_run.events_per_s
                    else None
                ),
                "sqlite_latency_ms": {
                    "p50": sqlite_run.measured.latency_ms["p50"],
                    "p99": sqlite_run.measured.latency_ms["p99"],
                },
                "postgres_latency_ms": {
                    "p50": pg_run.measured.latency_ms["p50"],
                    "p99": pg_run.measured.latency_ms["p99"],
                },
            }
        )
    return rows


def comparison_table(scenarios: Sequence[ScenarioResult]) -> str:
    rows = [
        "| Load (64 connections) | Store | 2xx events/s | p50 ms | p99 ms | Gateway CPU µs/req "
        "| PostgreSQL CPU µs/req | PostgreSQL ÷ SQLite events/s |",
        "|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for load_name, sqlite_run, pg_run in _pairs(scenarios):
        ratio = pg_run.events_per_s / sqlite_run.events_per_s if sqlite_run.events_per_s else 0
        for store, run in ((SQLITE, sqlite_run), (POSTGRES, pg_run)):
            rows.append(
                _cells(
                    [
                        load_name,
                        store,
                        _fmt(run.events_per_s),
                        f"{run.measured.latency_ms['p50']:.2f}",
                        f"{run.measured.latency_ms['p99']:.2f}",
                        _cost(run, "server_cpu_us_per_request"),
                        _cost(run, "postgres_cpu_us_per_request") if store == POSTGRES else "–",
                        f"**{ratio:.1%}**" if store == POSTGRES else "",
                    ]
                )
            )
    return "\n".join(rows)


def durability_line(scenarios: Sequence[ScenarioResult]) -> str:
    parts = []
    for s in scenarios:
        d = s.durability or {}
        verdict = "pass" if d.get("passed") else "**FAIL**"
        parts.append(
            f"{s.name} {verdict} ({d.get('stored_records', 0):,} stored, "
            f"{d.get('distinct_event_ids', 0):,} distinct ids, "
            f"{d.get('acknowledged_events_seen_by_wrk', 0):,} acknowledged to wrk)"
        )
    return "Durability: " + "; ".join(parts) + "."


def postgres_summary(report: GroupReport) -> str:
    return "\n\n".join(
        [
            _server_line(report.settings),
            comparison_table(report.scenarios),
            scenario_table(report.scenarios),
            durability_line(report.scenarios),
        ]
    )


def _server_line(settings: Mapping[str, Any]) -> str:
    server_settings = settings["postgres_server"]
    shown = ", ".join(f"`{name}={server_settings[name]}`" for name in SERVER_SETTINGS[1:])
    where = server_settings.get("data_directory_filesystem", "unknown")
    return (
        f"PostgreSQL {server_settings['server_version']} on this machine (127.0.0.1, "
        f"data dir on {where}): {shown}."
    )


def render_postgres(report: GroupReport) -> str:
    """The "PostgreSQL store vs SQLite" section; the harness owns it between the markers."""
    settings = report.settings
    lines = [
        "## PostgreSQL store vs SQLite",
        "",
        "<!-- Generated by `python -m benchmarks.run --only postgres`; edits here are "
        "overwritten. -->",
        "",
        f"Measured {report.date_utc} on: {machine_line(report)}",
        "",
        _server_line(settings),
        "",
        comparison_table(report.scenarios),
        "",
        scenario_table(report.scenarios),
        "",
        durability_line(report.scenarios),
        "",
        "### Reproduce",
        "",
        "```sh",
        ".venv/bin/python -m benchmarks.run --only postgres",
        "# another server: STRONGROOM_BENCH_POSTGRES=postgresql://USER@HOST:PORT/DB",
        "```",
        "",
        "### Method",
        "",
        "- The ingest group's load: `wrk -t1 -c64 --latency` with `benchmarks/ingest.lua` "
        "(every event id new), single events and batches of 100, "
        f"{settings['warmup_s']} s warm-up then {settings['duration_s']} s measured. Each "
        "load runs on SQLite, then at once on PostgreSQL, so drift on the machine falls "
        "on both.",
        "- Each scenario starts its own gateway, `python -m strongroom serve --data-dir "
        "<fresh temp dir>`; for PostgreSQL with `STRONGROOM_DATABASE_URL` naming a fresh "
        "database on the server above, created empty (the gateway creates the schema) and "
        "dropped afterwards. SQLite runs with `synchronous=FULL`, PostgreSQL with the "
        "server's settings above: on both a 202 means the events were committed.",
        (
            f"- Gateway pinned to core {settings['server_cpu']}, wrk to core "
            f"{settings['load_cpu']} (`taskset -c`). PostgreSQL is a shared server and is "
            "**not** pinned: its backends run on either core, so on a 2-core machine they take "
            "CPU from the gateway or from wrk; *Other on its core* shows how much of the "
            "gateway's. *PostgreSQL CPU µs/req* is the CPU time of the backends serving the "
            "benchmark database (from `/proc`, a lower bound) per request."
            if settings["server_cpu"] is not None
            else "- **Not pinned**: fewer than two usable cores (or no `taskset`)."
        ),
        "- Rate limiters out of the way as in the ingest group ("
        + ", ".join(f"`{name}`" for name in RATE_LIMIT_VARIABLES)
        + f" = {UNLIMITED_RATE}); access log on.",
        "- Durability, per scenario (warm-up and measured runs together): the ingest "
        "group's check (the log length from `/metrics` is at least the 202s wrk read × "
        "events per request and equals the gateway's own 202 count × events), then, once "
        "the gateway has stopped, the store itself is counted: the topic's records, their "
        "distinct event ids and their offsets must agree (every acknowledged id stored "
        "exactly once, offsets dense from 0).",
        "- No target is set for PostgreSQL; the figure to watch is the PostgreSQL ÷ SQLite "
        "ratio measured in the same run.",
    ]
    if report.notes:
        lines += ["", "### Notes", "", *(f"- {note}" for note in report.notes)]
    return "\n".join(lines)


def postgres_notes(scenarios: Sequence[ScenarioResult]) -> list[str]:
    notes = []
    for s in scenarios:
        notes.extend(refusals(s.name, s.measured)[1])
        cpu = s.cpu or {}
        if lost_share(cpu) > CONTENDED_SHARE:
            notes.append(
                f"{s.name}: other processes and the hypervisor took {lost_share(cpu):.0f}% "
                "of the gateway's core"
                + (
                    f" (the PostgreSQL backends used {cpu['postgres_cpu_percent']:.0f}% of a "
                    "core in all)"
                    if "postgres_cpu_percent" in cpu
                    else ""
                )
                + "; CPU µs/req is the steadier figure."
            )
        notes.extend(load_generator_note(s.name, cpu))
    return notes


@scenario_group("postgres", render_postgres, summary=postgres_summary)
def postgres_group(runner: Runner) -> GroupReport:
    """Ingest on PostgreSQL next to SQLite: single events and batches of 100, 64 connections."""
    started = time.perf_counter()
    server_settings = asyncio.run(_server_settings())
    scenarios = []
    for load_name in LOADS:
        for store in STORES:
            print(f"   {store}, {load_name} ...", flush=True)
            scenarios.append(run_store_scenario(runner, store, load_name))
    return GroupReport(
        name="postgres",
        title="PostgreSQL store vs SQLite",
        scenarios=scenarios,
        targets=[],
        derived={
            "comparison": comparison_rows(scenarios),
            "group_seconds": round(time.perf_counter() - started, 1),
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
            "fresh_database_per_scenario": True,
            "postgres_server": server_settings,
        },
        notes=postgres_notes(scenarios),
    )
