"""What every command shares: settings loading and error reporting."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from strongroom.config import Settings, load_settings
from strongroom.errors import ConfigurationError, StrongroomError

DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="Data directory (default: $STRONGROOM_DATA_DIR or ./.strongroom)."
    ),
]


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
    if not settings.database_path.exists():
        fail(
            f"no Strongroom data in {settings.data_dir}; start the gateway there first "
            "or pass --data-dir"
        )
    return settings


def report(exc: StrongroomError) -> NoReturn:
    fail(str(exc) or exc.code)
