"""Fixtures for the end-to-end tests: real gateway processes, always stopped."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import Gateway


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    """Start gateways (default data dir ``tmp_path/data``); every one is stopped at teardown."""
    started: list[Gateway] = []

    def start(
        data_dir: Path | None = None, env: dict[str, str] | None = None, **kw: Any
    ) -> Gateway:
        process = Gateway(data_dir or tmp_path / "data", env, **kw)
        started.append(process)
        return process.start()

    try:
        yield start
    finally:
        for process in started:
            process.ensure_stopped()


@pytest.fixture
def gateway(start_gateway: Callable[..., Gateway]) -> Gateway:
    """A real ``strongroom serve`` process (overrides the shared fixture, which leaks files)."""
    return start_gateway()
