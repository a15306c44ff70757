"""Fixtures for the audit-trail tests: in-process gateways and real server processes."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from audit_support import AuditApp, open_audit_app

from support import GatewayProcess, gateway_starter
from support_app import numbered_factory


@pytest.fixture
async def audit_app(tmp_path: Path) -> AsyncIterator[AuditApp]:
    """The real app in process (lifespan entered) with a platform admin key."""
    async with open_audit_app(tmp_path) as opened:
        yield opened


@pytest.fixture
def make_audit_app(
    tmp_path: Path,
) -> Callable[..., contextlib.AbstractAsyncContextManager[AuditApp]]:
    """A factory: ``async with make_audit_app(ratelimit_burst=2) as app`` on custom settings."""
    return numbered_factory(tmp_path, open_audit_app)


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    """Start ``strongroom serve`` processes; every one is stopped at teardown."""
    with gateway_starter(tmp_path / "data", start_timeout=40.0, stop_timeout=20) as start:

        def start_server(
            data_dir: Path | None = None,
            env: dict[str, str] | None = None,
            *,
            configured_keys: bool = True,
        ) -> GatewayProcess:
            unset = () if configured_keys else ("STRONGROOM_API_KEYS",)
            return start(data_dir, env, unset=unset)

        yield start_server
