"""The ``strongroom`` command line."""

from __future__ import annotations

import typer

from strongroom.cli import admin, audit, config_command, db, kms, policy, serve, stream

app = typer.Typer(
    name="strongroom",
    help="Strongroom: a self-hosted security gateway for payment data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("serve")(serve.serve)
app.command("init")(admin.init)
app.command("usage")(admin.usage)
app.add_typer(admin.tenants_app, name="tenants")
app.add_typer(admin.keys_app, name="keys")
app.add_typer(db.app, name="db")
app.add_typer(audit.app, name="audit")
app.add_typer(config_command.app, name="config")
app.add_typer(stream.app, name="stream")
app.add_typer(kms.app, name="kms")
app.add_typer(policy.app, name="policy")


def main() -> None:
    app()
