"""Helpers for the audit-trail tests: an in-process gateway, real processes, the CLI,
and direct access to the audit tables (sqlite3 on the SQLite file, or a plain
connection to the PostgreSQL database) as an attacker (or a DBA) would have it.

Nothing here imports ``strongroom.domain.merkle``: the proof checks in these tests
recompute everything with ``hashlib`` so that a bug in the product's tree math
cannot hide itself.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import subprocess
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx

import support_cli
from strongroom.api.state import GatewayState, open_gateway
from strongroom.config import Settings
from strongroom.domain.access import Role
from strongroom.domain.tenancy import Tenant
from strongroom.observability.logging import get_logger
from strongroom.observability.metrics import Metrics
from support import KEY_IN_TEXT, GatewayProcess, bearer
from support_app import InProcessGateway, make_settings, read_pages, serving
from support_cli import clean_env, cli_argv, data_dir_env
from support_database import Connection, connected, on_postgres

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


def rfc9162_leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


# -- in process ---------------------------------------------------------------------------


def audit_settings(directory: Path, **overrides: Any) -> Settings:
    """No configured keys, no access log, unthrottled unless ``overrides`` say otherwise."""
    return make_settings(directory, **{"api_keys": (), **UNTHROTTLED, **overrides})


@dataclass
class AuditApp(InProcessGateway):
    """One in-process gateway (lifespan entered), a client on it and a platform admin key."""

    platform: str
    home: Tenant

    @property
    def data_dir(self) -> Path:
        return self.state.settings.data_dir

    async def audit(self, secret: str | None = None, **params: Any) -> list[dict[str, Any]]:
        """Every record ``GET /v1/audit`` shows the key (the platform key by default)."""
        return await read_pages(
            self.http,
            "/v1/audit",
            bearer(secret or self.platform),
            params=params,
            what="the audit listing",
        )

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
    async with serving(audit_settings(directory, **overrides)) as (app, http):
        state: GatewayState = app.state.gateway
        home = await state.tenants.create(f"platform-{uuid.uuid4().hex[:8]}")
        issued = await state.keys.create(
            tenant_id=home.id, name="platform admin", role=Role.ADMIN, scopes=None,
            expires_at=None, granted_by=None, platform=True,
        )  # fmt: skip
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


#: ``support_cli.cli`` with more time: some audit commands read the whole log.
cli = functools.partial(support_cli.cli, timeout=90)


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
    processes = []
    for data_dir, extra in jobs:
        args = ("audit", "verify", "--json", "--data-dir", str(data_dir), *extra)
        processes.append(
            subprocess.Popen(
                cli_argv(*args),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=clean_env(data_dir_env(args)),
            )
        )
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

    return CliRunner().invoke(app, list(args), env={**data_dir_env(args, env), **(env or {})})


def verify_in_process(data_dir: Path, *extra: str) -> Verdict:
    """The same ``strongroom audit verify --json`` command, run in this process."""
    result = cli_in_process("audit", "verify", "--json", "--data-dir", str(data_dir), *extra)
    assert result.stdout.strip(), f"verify printed nothing (exit {result.exit_code}):\n{result}"
    return Verdict(result.exit_code, json.loads(result.stdout), result.stderr)


def bootstrap_key(process: GatewayProcess) -> str:
    """The platform admin key a fresh ``serve`` without configured keys printed once."""
    found = KEY_IN_TEXT.findall(process.stdout_path.read_text(errors="replace"))
    assert len(found) == 1, process.output()
    secret: str = found[0]
    return secret


# -- the database, directly ---------------------------------------------------------------


#: ``support_database.connected``: a plain autocommit connection to the data dir's store.
database = connected


def _triggers(connection: Connection) -> list[tuple[str, str]]:
    """(trigger, table) of every audit guard."""
    if on_postgres():
        query = (
            "SELECT t.tgname, c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "WHERE NOT t.tgisinternal AND t.tgname LIKE 'audit%' ORDER BY t.tgname"
        )
    else:
        query = (
            "SELECT name, tbl_name FROM sqlite_master "
            "WHERE type = 'trigger' AND name LIKE 'audit%' ORDER BY name"
        )
    return [(name, table) for name, table in connection.execute(query).fetchall()]


def audit_triggers(connection: Connection) -> list[str]:
    return [name for name, _ in _triggers(connection)]


def drop_audit_triggers(connection: Connection) -> list[str]:
    """What a DBA can do: remove the guards before rewriting history."""
    dropped = _triggers(connection)
    for name, table in dropped:
        on_table = f' ON "{table}"' if on_postgres() else ""
        connection.execute(f'DROP TRIGGER "{name}"{on_table}')
    return [name for name, _ in dropped]


def stored_rows(connection: Connection) -> list[tuple[int, bytes, bytes]]:
    rows = connection.execute("SELECT seq, data, leaf FROM audit_records ORDER BY seq").fetchall()
    return [(seq, bytes(data), bytes(leaf)) for seq, data, leaf in rows]


def checkpoint_sizes(connection: Connection) -> list[int]:
    rows = connection.execute("SELECT tree_size FROM audit_checkpoints ORDER BY tree_size")
    return [size for (size,) in rows.fetchall()]


def all_record_data(data_dir: Path) -> list[bytes]:
    with database(data_dir) as connection:
        return [data for _, data, _ in stored_rows(connection)]
