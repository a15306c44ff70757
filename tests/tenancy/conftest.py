"""Fixtures for the tenancy tests: gateways without configured keys, in process or real."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tenancy_support import Harness, ServeProcess, open_harness


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    """The real app in process, lifespan entered, with no configured keys."""
    async with open_harness(tmp_path) as opened:
        yield opened


@pytest.fixture
def make_harness(
    tmp_path: Path,
) -> Callable[..., contextlib.AbstractAsyncContextManager[Harness]]:
    """A factory: ``async with make_harness(ratelimit_burst=3) as h`` runs on custom settings."""
    counter = iter(range(1_000))

    def factory(**overrides: Any) -> contextlib.AbstractAsyncContextManager[Harness]:
        return open_harness(tmp_path / f"app{next(counter)}", **overrides)

    return factory


@pytest.fixture
def start_serve(tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    """Start ``strongroom serve`` processes; every one is stopped at teardown."""
    started: list[ServeProcess] = []

    def start(
        data_dir: Path | None = None,
        env: dict[str, str] | None = None,
        *,
        configured_keys: str | None = None,
    ) -> ServeProcess:
        process = ServeProcess(data_dir or tmp_path / "data", env, configured_keys=configured_keys)
        started.append(process)
        return process.start()

    try:
        yield start
    finally:
        for process in started:
            process.ensure_stopped()
