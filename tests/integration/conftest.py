"""Fixtures for the HTTP integration tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from strongroom.api.app import create_app
from support_app import make_settings, numbered_factory, running


@contextlib.asynccontextmanager
async def _serve(directory: Path, **overrides: Any) -> AsyncIterator[FastAPI]:
    async with running(create_app(make_settings(directory, **overrides))) as app:
        yield app


@pytest.fixture
def serve(tmp_path: Path) -> Callable[..., contextlib.AbstractAsyncContextManager[FastAPI]]:
    """A factory: ``async with serve(ratelimit_burst=3) as app`` runs an app on custom settings."""
    return numbered_factory(tmp_path, _serve)
