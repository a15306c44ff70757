"""``strongroom db``: schema migrations."""

from __future__ import annotations

import asyncio

import typer

from strongroom.adapters.sql import engine as sql
from strongroom.adapters.store import engine_for
from strongroom.cli.common import DatabaseUrlOption, DataDirOption, fail, settings_or_exit
from strongroom.errors import StrongroomError

app = typer.Typer(help="Database schema migrations.", no_args_is_help=True)


@app.command("upgrade")
def upgrade(data_dir: DataDirOption = None, database_url: DatabaseUrlOption = None) -> None:
    """Create or upgrade the schema to this release's revision."""
    settings = settings_or_exit(data_dir=data_dir, database_url=database_url)

    async def run() -> tuple[str | None, str]:
        engine = engine_for(settings)
        try:
            return await sql.upgrade(engine)
        finally:
            await engine.dispose()

    try:
        before, after = asyncio.run(run())
    except StrongroomError as exc:
        fail(str(exc))
    typer.echo(f"schema at {after}" + ("" if before == after else f" (was {before or 'empty'})"))


@app.command("current")
def current(data_dir: DataDirOption = None, database_url: DatabaseUrlOption = None) -> None:
    """Print the database's schema revision and this release's."""
    settings = settings_or_exit(data_dir=data_dir, database_url=database_url)

    async def run() -> str | None:
        engine = engine_for(settings)
        try:
            return await sql.current_revision(engine)
        finally:
            await engine.dispose()

    try:
        revision = asyncio.run(run())
    except StrongroomError as exc:
        fail(str(exc))
    head = sql.head_revision()
    state = "up to date" if revision == head else f"behind: run 'strongroom db upgrade' ({head})"
    typer.echo(f"{revision or 'empty'} ({state})")


@app.command("history")
def history() -> None:
    """List the migrations this release carries, newest first."""
    for revision, down, message in sql.history():
        typer.echo(f"{down or '<base>'} -> {revision}: {message}")
