"""Helpers for the audit-trail tests: an in-process gateway, real processes, the CLI,
and direct SQLite access to the audit tables as an attacker (or a DBA) would have it.

Nothing here imports ``strongroom.domain.merkle``: the proof checks in these tests
recompute everything with ``hashlib`` so that a bug in the product's tree math
cannot hide itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
from fastapi import FastAPI

from strongroom.api.app import create_app
from strongroom.api.state import GatewayState, open_gateway
from strongroom.config import Settings
from strongroom.domain.access import Role, parse_scopes
from strongroom.domain.cards import contains_pan
from strongroom.domain.tenancy import Tenant
from strongroom.observability.logging import get_logger
from strongroom.observability.metrics import Metrics
from strongroom.services.keys import IssuedKey
from support import GatewayProcess
from support import event as any_event

DB_FILE: Final = "strongroom.db"
PROBLEM_JSON: Final = "application/problem+json"
KEY_IN_TEXT: Final = re.compile(r"sr_(?:live|test)_[0-9A-Za-z]{38}")
RECORD_FIELDS: Final = (
    "seq", "time", "tenant", "actor", "action", "outcome", "origin", "resource", "details",
)  # fmt: skip
#: Failed-attempt limits high enough that tests about 401s are not cut short by 429s.
UNTHROTTLED: Final[dict[str, Any]] = {
    "ip_ratelimit_rps": 10_000.0,
    "ip_ratelimit_burst": 100_000,
    "ratelimit_rps": 10_000.0,
    "ratelimit_burst": 100_000,
}
UNTHROTTLED_ENV: Final = {
    "STRONGROOM_RATELIMIT_RPS": "1000000",
    "STRONGROOM_RATELIMIT_BURST": "1000000",
    "STRONGROOM_IP_RATELIMIT_RPS": "1000000",
    "STRONGROOM_IP_RATELIMIT_BURST": "1000000",
}


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def key_id_of(secret: str) -> str:
    """The public id a managed key carries: ``key_`` + its first 12 random characters."""
    return "key_" + secret[8:20]


def rfc9162_leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def card_free_event(**overrides: Any) -> dict[str, Any]:
    """``support.event`` redrawn until no random identifier looks like a card number."""
    for _ in range(1_000):
        body = any_event(**overrides)
        if not contains_pan(json.dumps(body)):
            return body
    raise AssertionError("could not draw a card-free event")


def assert_problem(response: httpx.Response, status: int | None = None) -> dict[str, Any]:
    """An RFC 9457 problem (4xx unless ``status`` says which), never a 500."""
    assert response.status_code < 500, response.text
    if status is not None:
        assert response.status_code == status, response.text
    else:
        assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"].split(";")[0] == PROBLEM_JSON, response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == response.status_code
    assert body["request_id"] == response.headers["x-request-id"]
    return body


# -- in process ---------------------------------------------------------------------------


def audit_settings(directory: Path, **overrides: Any) -> Settings:
    """No configured keys, no access log, unthrottled unless ``overrides`` say otherwise."""
    values: dict[str, Any] = {
        "data_dir": directory / "data",
        "api_keys": (),
        "access_log": False,
        **UNTHROTTLED,
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class AuditApp:
    """One in-process gateway (lifespan entered), a client on it and a platform admin key."""

    app: FastAPI
    http: httpx.AsyncClient
    platform: str
    home: Tenant

    @property
    def state(self) -> GatewayState:
        state: GatewayState = self.app.state.gateway
        return state

    @property
    def data_dir(self) -> Path:
        return self.state.settings.data_dir

    async def tenant(self, name: str | None = None) -> Tenant:
        return await self.state.tenants.create(name or f"tenant-{uuid.uuid4().hex[:12]}")

    async def key(
        self,
        tenant: Tenant | str,
        role: Role | str = Role.ADMIN,
        *,
        scopes: Iterable[str] | None = None,
        platform: bool = False,
        expires_at: float | None = None,
        name: str = "test key",
    ) -> IssuedKey:
        """A key made as an operator at the CLI would make it (no granter)."""
        return await self.state.keys.create(
            tenant_id=tenant if isinstance(tenant, str) else tenant.id,
            name=name,
            role=Role(role),
            scopes=None if scopes is None else parse_scopes(scopes),
            expires_at=expires_at,
            granted_by=None,
            platform=platform,
        )

    def peer(self, ip: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=(ip, 50000))
        return httpx.AsyncClient(transport=transport, base_url="http://gateway")

    async def audit(self, secret: str | None = None, **params: Any) -> list[dict[str, Any]]:
        """Every record ``GET /v1/audit`` shows the key (the platform key by default)."""
        records: list[dict[str, Any]] = []
        query: dict[str, Any] = {"limit": 1000, **params}
        for _ in range(1_000):
            response = await self.http.get(
                "/v1/audit", params=query, headers=bearer(secret or self.platform)
            )
            assert response.status_code == 200, response.text
            page = response.json()
            records.extend(page["data"])
            if page["next"] is None:
                return records
            query["after"] = page["next"]
        raise AssertionError("the audit listing did not end")

    async def one(self, response: httpx.Response, action: str) -> dict[str, Any]:
        """The single ``action`` record written for ``response`` (matched by its request id)."""
        request_id = response.headers["x-request-id"]
        found = [
            r for r in await self.audit(action=action) if r["origin"]["request_id"] == request_id
        ]
        assert len(found) == 1, (action, request_id, found)
        return found[0]


@contextlib.asynccontextmanager
async def open_audit_app(directory: Path, **overrides: Any) -> AsyncIterator[AuditApp]:
    """The real app in process, lifespan entered, with a platform admin key of its own."""
    app = create_app(audit_settings(directory, **overrides))
    async with app.router.lifespan_context(app):
        state: GatewayState = app.state.gateway
        home = await state.tenants.create(f"platform-{uuid.uuid4().hex[:8]}")
        issued = await state.keys.create(
            tenant_id=home.id, name="platform admin", role=Role.ADMIN, scopes=None,
            expires_at=None, granted_by=None, platform=True,
        )  # fmt: skip
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            yield AuditApp(app, http, issued.secret, home)


@contextlib.asynccontextmanager
async def open_state(directory: Path, **overrides: Any) -> AsyncIterator[GatewayState]:
    """The store and services as the CLI opens them: no server, no shutdown checkpoint."""
    state = await open_gateway(
        audit_settings(directory, **overrides), Metrics(), get_logger("strongroom.tests")
    )
    try:
        yield state
    finally:
        await state.store.aclose()


# -- real processes -------------------------------------------------------------------------


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without any ``STRONGROOM_*`` variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    env.update(extra or {})
    return env


def cli_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "strongroom", *args]


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    """``python -m strongroom ARGS`` with a clean environment, output captured."""
    return subprocess.run(
        cli_argv(*args),
        capture_output=True,
        text=True,
        env=clean_env(env),
        timeout=timeout,
        check=False,
    )


@dataclass(frozen=True)
class Verdict:
    """What ``strongroom audit verify --json`` answered."""

    returncode: int
    report: dict[str, Any]
    stderr: str

    @property
    def seq(self) -> int | None:
        seq: int | None = self.report["first_bad_seq"]
        return seq

    @property
    def damage(self) -> str | None:
        damage: str | None = self.report["damage"]
        return damage


def verify_many(jobs: Sequence[tuple[Path, Sequence[str]]], timeout: float = 120) -> list[Verdict]:
    """Run ``strongroom audit verify --json --data-dir D EXTRA`` for every job at once."""
    processes = [
        subprocess.Popen(
            cli_argv("audit", "verify", "--json", "--data-dir", str(data_dir), *extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(),
        )
        for data_dir, extra in jobs
    ]
    verdicts = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=timeout)
        assert stdout.strip(), f"verify printed nothing (exit {process.returncode}):\n{stderr}"
        verdicts.append(Verdict(process.returncode, json.loads(stdout), stderr))
    return verdicts


def verify(data_dir: Path, *extra: str) -> Verdict:
    (verdict,) = verify_many([(data_dir, extra)])
    return verdict


def cli_in_process(*args: str, env: dict[str, str] | None = None) -> Any:
    """``strongroom ARGS`` run in this process through Typer's test runner.

    Starting an interpreter costs over a second of CPU (imports), so beyond the
    basic cases the tests run the commands' own code here; the result has
    ``exit_code``, ``stdout`` and ``stderr``.
    """
    from typer.testing import CliRunner

    from strongroom.cli import app

    return CliRunner().invoke(app, list(args), env=env or {})


def verify_in_process(data_dir: Path, *extra: str) -> Verdict:
    """The same ``strongroom audit verify --json`` command, run in this process."""
    result = cli_in_process("audit", "verify", "--json", "--data-dir", str(data_dir), *extra)
    assert result.stdout.strip(), f"verify printed nothing (exit {result.exit_code}):\n{result}"
    return Verdict(result.exit_code, json.loads(result.stdout), result.stderr)


class AuditProcess(GatewayProcess):
    """``support.GatewayProcess`` that closes its copies of the output files (an unclosed
    file is a ResourceWarning, an error here) and can start without configured keys."""

    def __init__(
        self, data_dir: Path, env: dict[str, str] | None = None, *, configured_keys: bool = True
    ) -> None:
        super().__init__(data_dir, env)
        if not configured_keys:
            self.env.pop("STRONGROOM_API_KEYS", None)

    def start(self, timeout: float = 40.0) -> AuditProcess:
        argv = cli_argv("serve", "--port", str(self.port), "--data-dir", str(self.data_dir))
        with self.stdout_path.open("ab") as out, self.stderr_path.open("ab") as err:
            self.process = subprocess.Popen(argv, stdout=out, stderr=err, env=self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited early:\n{self.output()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            time.sleep(0.05)
        self.process.kill()
        self.process.wait(10)
        raise RuntimeError(f"gateway did not become healthy:\n{self.output()}")

    def ensure_stopped(self) -> None:
        """Stop the process if it still runs (SIGTERM, then SIGKILL); never raises."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.stop(timeout=20)


def bootstrap_key(process: AuditProcess) -> str:
    """The platform admin key a fresh ``serve`` without configured keys printed once."""
    found = KEY_IN_TEXT.findall(process.stdout_path.read_text(errors="replace"))
    assert len(found) == 1, process.output()
    secret: str = found[0]
    return secret


# -- the database, directly ---------------------------------------------------------------


def connect(data_dir: Path) -> sqlite3.Connection:
    """A plain sqlite3 connection to the data dir's database (autocommit)."""
    connection = sqlite3.connect(data_dir / DB_FILE, isolation_level=None)
    connection.execute("PRAGMA busy_timeout = 5000")
    return connection


@contextlib.contextmanager
def database(data_dir: Path) -> Iterator[sqlite3.Connection]:
    connection = connect(data_dir)
    try:
        yield connection
    finally:
        connection.close()


def audit_triggers(connection: sqlite3.Connection) -> list[str]:
    rows = connection.execute(
        "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'audit%' ORDER BY name"
    ).fetchall()
    return [name for (name,) in rows]


def drop_audit_triggers(connection: sqlite3.Connection) -> list[str]:
    """What a DBA can do: remove the guards before rewriting history."""
    dropped = audit_triggers(connection)
    for name in dropped:
        connection.execute(f'DROP TRIGGER "{name}"')
    return dropped


def stored_rows(connection: sqlite3.Connection) -> list[tuple[int, bytes, bytes]]:
    rows = connection.execute("SELECT seq, data, leaf FROM audit_records ORDER BY seq").fetchall()
    return [(seq, bytes(data), bytes(leaf)) for seq, data, leaf in rows]


def checkpoint_sizes(connection: sqlite3.Connection) -> list[int]:
    rows = connection.execute("SELECT tree_size FROM audit_checkpoints ORDER BY tree_size")
    return [size for (size,) in rows.fetchall()]


def all_record_data(data_dir: Path) -> list[bytes]:
    with database(data_dir) as connection:
        return [data for _, data, _ in stored_rows(connection)]
