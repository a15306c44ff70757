"""Fixtures for the end-to-end tests: real gateway processes, always stopped."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from support import GatewayProcess


@pytest.fixture
def gateway(start_gateway: Callable[..., GatewayProcess]) -> GatewayProcess:
    """A real ``strongroom serve`` process, stopped at teardown by ``start_gateway``."""
    return start_gateway()
