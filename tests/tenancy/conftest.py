"""Fixtures for the tenancy tests: gateways without configured keys, in process or real."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from tenancy_support import Harness, open_harness

from support import GatewayProcess, gateway_starter
from support_app import numbered_factory


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
    return numbered_factory(tmp_path, open_harness)


@pytest.fixture
def start_serve(tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    """Start ``strongroom serve`` processes (without ``STRONGROOM_API_KEYS`` unless
    ``configured_keys`` is given); every one is stopped at teardown."""
    with gateway_starter(tmp_path / "data", start_timeout=30.0, stop_timeout=15) as start:

        def start_serve(
            data_dir: Path | None = None,
            env: dict[str, str] | None = None,
            *,
            configured_keys: str | None = None,
        ) -> GatewayProcess:
            if configured_keys is None:
                return start(data_dir, env, unset=("STRONGROOM_API_KEYS",))
            return start(data_dir, {**(env or {}), "STRONGROOM_API_KEYS": configured_keys})

        yield start_serve
