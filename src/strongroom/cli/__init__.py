"""The ``strongroom`` command line."""

from __future__ import annotations

import typer

from strongroom.cli import config_command, serve, stream

app = typer.Typer(
    name="strongroom",
    help="Strongroom: a self-hosted security gateway for payment data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("serve")(serve.serve)
app.add_typer(config_command.app, name="config")
app.add_typer(stream.app, name="stream")


def main() -> None:
    app()
