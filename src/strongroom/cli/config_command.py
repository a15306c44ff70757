"""``strongroom config show``: the effective configuration, secrets redacted."""

from __future__ import annotations

import json

import typer

from strongroom.cli.common import DataDirOption, settings_or_exit

app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)


@app.command("show")
def show(data_dir: DataDirOption = None) -> None:
    """Print the effective configuration as JSON, with every secret redacted."""
    settings = settings_or_exit(data_dir=data_dir)
    typer.echo(json.dumps(settings.redacted(), indent=2, sort_keys=True))
