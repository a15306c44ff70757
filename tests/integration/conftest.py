"""Fixtures for the HTTP integration tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from integration_support import make_settings, running

from strongroom.api.app import create_app


@pytest.fixture
def serve(tmp_path: Path) -> Callable[..., contextlib.AbstractAsyncContextManager[FastAPI]]:
    """A factory: ``async with serve(ratelimit_burst=3) as app`` runs an app on custom settings."""
    counter = iter(range(1_000))

    @contextlib.asynccontextmanager
    async def factory(**overrides: Any) -> AsyncIterator[FastAPI]:
        settings = make_settings(tmp_path / f"app{next(counter)}", **overrides)
        async with running(create_app(settings)) as app:
            yield app

    return factory
