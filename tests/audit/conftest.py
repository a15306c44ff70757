"""Fixtures for the audit-trail tests: in-process gateways and real server processes."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from audit_support import AuditApp, AuditProcess, open_audit_app


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
    counter = iter(range(1_000))

    def factory(**overrides: Any) -> contextlib.AbstractAsyncContextManager[AuditApp]:
        return open_audit_app(tmp_path / f"app{next(counter)}", **overrides)

    return factory


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., AuditProcess]]:
    """Start ``strongroom serve`` processes; every one is stopped at teardown."""
    started: list[AuditProcess] = []

    def start(
        data_dir: Path | None = None,
        env: dict[str, str] | None = None,
        *,
        configured_keys: bool = True,
    ) -> AuditProcess:
        process = AuditProcess(data_dir or tmp_path / "data", env, configured_keys=configured_keys)
        started.append(process)
        return process.start()

    try:
        yield start
    finally:
        for process in started:
            process.ensure_stopped()
