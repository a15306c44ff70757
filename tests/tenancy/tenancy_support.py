"""Helpers for the tenancy tests: a gateway without configured keys, keys made through
the services, problem checks, and real ``strongroom`` processes for the CLI tests.

Every in-process gateway here starts with no ``STRONGROOM_API_KEYS``: tenants and
managed keys are created through the services on ``app.state.gateway`` after the
lifespan has started, exactly as ``strongroom init`` and ``keys create`` do.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
from fastapi import FastAPI

from strongroom.api.app import create_app
from strongroom.api.state import GatewayState
from strongroom.config import Settings
from strongroom.domain.access import Role, parse_scopes
from strongroom.domain.cards import contains_pan
from strongroom.domain.tenancy import Tenant
from strongroom.services.keys import IssuedKey
from strongroom.services.usage import utc_day
from support import GatewayProcess
from support import event as any_event

KEY_PATTERN: Final = re.compile(r"^sr_(live|test)_[0-9A-Za-z]{38}$")
KEY_IN_TEXT: Final = re.compile(r"sr_(?:live|test)_[0-9A-Za-z]{38}")
KEY_ID_PATTERN: Final = re.compile(r"^key_[0-9A-Za-z]{12}$")
TENANT_ID_PATTERN: Final = re.compile(r"^ten_[0-9A-Za-z]{16}$")
TOKENIZED_URL: Final = "/v1/streams/payments.tokenized"
PROBLEM_JSON: Final = "application/problem+json"
PROBLEM_FIELDS: Final = ("type", "title", "status", "detail", "code", "request_id")
#: Failed-attempt limits high enough that tests about 401s are not cut short by 429s.
UNTHROTTLED_IP: Final[dict[str, Any]] = {
    "ip_ratelimit_rps": 10_000.0,
    "ip_ratelimit_burst": 100_000,
}


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def today() -> str:
    """Today's UTC day, the unit usage is counted in."""
    return utc_day(time.time())


def card_free_event(**overrides: Any) -> dict[str, Any]:
    """``support.event`` redrawn until no random identifier looks like a card number."""
    for _ in range(1_000):
        body = any_event(**overrides)
        if not contains_pan(json.dumps(body)):
            return body
    raise AssertionError("could not draw a card-free event")


def key_id_of(secret: str) -> str:
    """The public id a managed key carries: ``key_`` + its first 12 random characters."""
    return "key_" + secret[8:20]


def assert_problem(
    response: httpx.Response, status: int, code: str | None = None
) -> dict[str, Any]:
    """The response is an RFC 9457 problem with every member the design promises."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    for member in PROBLEM_FIELDS:
        assert member in body, f"problem body lacks {member!r}: {body}"
    assert body["status"] == status
    assert body["type"].endswith("/" + body["code"])
    assert body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]
    if code is not None:
        assert body["code"] == code, body
    return body


def assert_unauthorized(response: httpx.Response) -> dict[str, Any]:
    body = assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].lower().startswith("bearer"), response.headers
    return body


def assert_forbidden_naming(response: httpx.Response, *names: str) -> dict[str, Any]:
    """403 problem whose detail names every one of ``names``."""
    body = assert_problem(response, 403)
    for name in names:
        assert name in body["detail"], f"the 403 does not name {name!r}: {body['detail']}"
    return body


def without_request_id(response: httpx.Response) -> dict[str, Any]:
    body = dict(response.json())
    body.pop("request_id")
    return body


def assert_no_secret_material(value: Any) -> None:
    """A key view (or list of them) holds no secret and no hash of one."""
    text = json.dumps(value)
    assert KEY_IN_TEXT.search(text) is None, text
    assert "sr_live_" not in text
    assert "sr_test_" not in text
    for view in value if isinstance(value, list) else [value]:
        assert "key" not in view, view
        for field in view:
            assert "hash" not in field.lower(), view
            assert "secret" not in field.lower(), view


@dataclass
class Harness:
    """One in-process gateway (lifespan entered) and a client on it."""

    app: FastAPI
    http: httpx.AsyncClient

    @property
    def state(self) -> GatewayState:
        state: GatewayState = self.app.state.gateway
        return state

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
        mode: str = "live",
    ) -> IssuedKey:
        """A key made as an operator at the CLI would make it (no granter)."""
        return await self.state.keys.create(
            tenant_id=tenant if isinstance(tenant, str) else tenant.id,
            name=name,
            role=Role(role),
            scopes=None if scopes is None else parse_scopes(scopes),
            expires_at=expires_at,
            granted_by=None,
            mode="test" if mode == "test" else "live",
            platform=platform,
        )

    def peer(self, ip: str) -> httpx.AsyncClient:
        """A client whose requests reach the app from the socket peer ``ip``."""
        transport = httpx.ASGITransport(app=self.app, client=(ip, 50000))
        return httpx.AsyncClient(transport=transport, base_url="http://gateway")

    async def ingest(self, secret: str, count: int = 1) -> list[str]:
        """Ingest ``count`` events as one batch with ``secret``; the accepted event ids."""
        events = [card_free_event() for _ in range(count)]
        response = await self.http.post(
            "/v1/events", json={"events": events}, headers=bearer(secret)
        )
        assert response.status_code == 202, response.text
        accepted: list[str] = response.json()["accepted"]
        assert sorted(accepted) == sorted(e["event_id"] for e in events)
        return accepted

    async def stream(self, secret: str) -> list[dict[str, Any]]:
        """Every record of ``payments.tokenized`` the key's tenant can read."""
        records: list[dict[str, Any]] = []
        after: int | None = None
        for _ in range(1_000):
            params: dict[str, int] = {"limit": 1000}
            if after is not None:
                params["after"] = after
            response = await self.http.get(TOKENIZED_URL, params=params, headers=bearer(secret))
            assert response.status_code == 200, response.text
            page = response.json()
            records.extend(page["data"])
            if page["next"] is None:
                return records
            after = page["next"]
        raise AssertionError("the stream did not end")

    async def event_ids(self, secret: str) -> list[str]:
        return [r["record"]["event_id"] for r in await self.stream(secret)]


def tenancy_settings(directory: Path, **overrides: Any) -> Settings:
    """Settings with no configured keys and no access log, plus ``overrides``."""
    values: dict[str, Any] = {
        "data_dir": directory / "data",
        "api_keys": (),
        "access_log": False,
        **UNTHROTTLED_IP,
    }
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def open_harness(directory: Path, **overrides: Any) -> AsyncIterator[Harness]:
    app = create_app(tenancy_settings(directory, **overrides))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            yield Harness(app, http)


# -- real processes ----------------------------------------------------------------------


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without any ``STRONGROOM_*`` variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    env.update(extra or {})
    return env


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``python -m strongroom ARGS`` with a clean environment, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "strongroom", *args],
        capture_output=True,
        text=True,
        env=clean_env(env),
        timeout=timeout,
        check=False,
    )


def cli_ok(*args: str, env: dict[str, str] | None = None) -> str:
    """Run the CLI, require exit 0, and return its stdout."""
    result = cli(*args, env=env)
    assert result.returncode == 0, f"{args}: exit {result.returncode}\n{result.stderr}"
    return result.stdout


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class ServeProcess(GatewayProcess):
    """``strongroom serve`` as a child process.

    Unlike ``support.GatewayProcess`` it starts without ``STRONGROOM_API_KEYS``
    unless ``configured_keys`` is given, and it closes its copies of the output
    files (an unclosed file is a ResourceWarning, which the suite turns into an error).
    """

    def __init__(
        self,
        data_dir: Path,
        env: dict[str, str] | None = None,
        *,
        configured_keys: str | None = None,
    ) -> None:
        super().__init__(data_dir, env)
        if configured_keys is None:
            self.env.pop("STRONGROOM_API_KEYS", None)
        else:
            self.env["STRONGROOM_API_KEYS"] = configured_keys

    def start(self, timeout: float = 30.0) -> ServeProcess:
        argv = [
            sys.executable, "-m", "strongroom", "serve",
            "--port", str(self.port), "--data-dir", str(self.data_dir),
        ]  # fmt: skip
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

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    def ensure_stopped(self) -> None:
        """Stop the process if it still runs (SIGTERM, then SIGKILL); never raises."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.stop(timeout=15)
