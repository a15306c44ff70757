"""What every command shares: settings, the store, and error reporting."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from strongroom.api.state import GatewayState, open_gateway
from strongroom.config import Settings, load_settings
from strongroom.errors import ConfigurationError, StrongroomError
from strongroom.observability.logging import get_logger
from strongroom.observability.metrics import Metrics

T = TypeVar("T")

DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="Data directory (default: $STRONGROOM_DATA_DIR or ./.strongroom)."
    ),
]
DatabaseUrlOption = Annotated[
    str | None,
    typer.Option(
        "--database-url", help="Database URL (default: $STRONGROOM_DATABASE_URL or the data dir)."
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``Error: message`` to stderr and exit with ``code``."""
    print(f"Error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def settings_or_exit(**overrides: Any) -> Settings:
    """Effective settings; invalid configuration exits 2 with one line naming the variable."""
    try:
        return load_settings(**overrides)
    except ConfigurationError as exc:
        fail(str(exc), code=2)


def existing_data_dir(settings: Settings) -> Settings:
    """Refuse a data dir holding no install.

    With a database URL the data dir still holds the install's secrets (the
    pepper above all): a command run against a wrong dir would otherwise create
    fresh ones and write records the gateways cannot read.
    """
    marker = settings.database_path if settings.database_url is None else settings.pepper_path
    if not marker.exists():
        fail(
            f"no Strongroom data in {settings.data_dir}; run 'strongroom init' "
            "(or start the gateway) there first, or pass --data-dir"
        )
    return settings


def with_gateway(
    settings: Settings,
    work: Callable[[GatewayState], Awaitable[T]],
    *,
    migrate: bool = False,
) -> T:
    """Open the store and services the server would use, run ``work``, close everything.

    Strongroom errors become ``Error: …`` lines with exit code 1 (2 for configuration).
    """

    async def run() -> T:
        state = await open_gateway(
            settings, Metrics(), get_logger("strongroom.cli"), migrate=migrate
        )
        try:
            result = await work(state)
            await state.usage.flush()
            return result
        finally:
            await state.aclose()

    try:
        return asyncio.run(run())
    except ConfigurationError as exc:
        fail(str(exc), code=2)
    except StrongroomError as exc:
        fail(getattr(exc, "detail", None) or str(exc) or exc.code)
