"""``strongroom init``, ``tenants``, ``keys`` and ``usage``: act on the store directly.

These work with the server up or down, on the data dir or a database URL, so
an operator can recover access or cut it off without the API.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from strongroom.api.state import GatewayState
from strongroom.cli.common import (
    DatabaseUrlOption,
    DataDirOption,
    JsonOption,
    existing_data_dir,
    fail,
    settings_or_exit,
    with_gateway,
)
from strongroom.domain.access import Role, parse_scopes
from strongroom.domain.tenancy import DEFAULT_TENANT_ID, TenantStatus
from strongroom.services.bootstrap import initialise
from strongroom.services.keys import DEFAULT_GRACE_SECONDS
from strongroom.services.tenants import key_view, tenant_view
from strongroom.services.usage import utc_day

tenants_app = typer.Typer(help="Create and manage tenants.", no_args_is_help=True)
keys_app = typer.Typer(help="Create and manage API keys.", no_args_is_help=True)

TenantOption = Annotated[str, typer.Option("--tenant", help="Tenant id or name.")]


def _settings(data_dir: Any, database_url: str | None, *, must_exist: bool = True) -> Any:
    settings = settings_or_exit(data_dir=data_dir, database_url=database_url)
    return existing_data_dir(settings) if must_exist else settings


def _print_rows(rows: list[dict[str, Any]], columns: list[str], as_json: bool) -> None:
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row))
        return
    table = Table(*columns)
    for row in rows:
        table.add_row(*(_cell(row.get(column)) for column in columns))
    Console().print(table)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def init(
    tenant: Annotated[str, typer.Option(help="Name of the first tenant.")] = DEFAULT_TENANT_ID,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Initialise a fresh install: first tenant and the platform admin key (printed once)."""
    settings = _settings(data_dir, database_url, must_exist=False)

    async def work(state: GatewayState) -> str:
        issued = await initialise(state.tenants, state.keys, state.store.keys, tenant_name=tenant)
        return issued.secret

    secret = with_gateway(settings, work)
    typer.echo(secret)


@tenants_app.command("create")
def tenants_create(
    name: str, data_dir: DataDirOption = None, database_url: DatabaseUrlOption = None
) -> None:
    """Create a tenant and print its id."""
    settings = _settings(data_dir, database_url, must_exist=False)
    tenant = with_gateway(settings, lambda state: state.tenants.create(name))
    typer.echo(tenant.id)


@tenants_app.command("list")
def tenants_list(
    as_json: JsonOption = False,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """List tenants."""
    settings = _settings(data_dir, database_url)
    tenants = with_gateway(settings, lambda state: state.tenants.list(after=None, limit=100_000))
    _print_rows([tenant_view(t) for t in tenants], ["id", "name", "status", "created_at"], as_json)


@tenants_app.command("show")
def tenants_show(
    tenant: str, data_dir: DataDirOption = None, database_url: DatabaseUrlOption = None
) -> None:
    """Show one tenant as JSON."""
    settings = _settings(data_dir, database_url)
    found = with_gateway(settings, lambda state: state.tenants.get(tenant))
    typer.echo(json.dumps(tenant_view(found), indent=2))


def _set_status(tenant: str, status: TenantStatus, data_dir: Any, database_url: Any) -> None:
    settings = _settings(data_dir, database_url)
    updated = with_gateway(settings, lambda state: state.tenants.set_status(tenant, status))
    typer.echo(f"{updated.id} {updated.status.value}")


@tenants_app.command("suspend")
def tenants_suspend(
    tenant: str, data_dir: DataDirOption = None, database_url: DatabaseUrlOption = None
) -> None:
    """Suspend a tenant: its keys answer 403 until it is resumed."""
    _set_status(tenant, TenantStatus.SUSPENDED, data_dir, database_url)


@tenants_app.command("resume")
def tenants_resume(
    tenant: str, data_dir: DataDirOption = None, database_url: DatabaseUrlOption = None
) -> None:
    """Resume a suspended tenant."""
    _set_status(tenant, TenantStatus.ACTIVE, data_dir, database_url)


@keys_app.command("create")
def keys_create(
    tenant: TenantOption,
    role: Annotated[Role, typer.Option(help="admin, operator or viewer.")],
    scopes: Annotated[
        str | None, typer.Option(help="Comma-separated scopes narrowing the role.")
    ] = None,
    name: Annotated[str, typer.Option(help="A label for people.")] = "cli",
    expires_in_days: Annotated[
        float | None, typer.Option("--expires-in-days", min=0.0001, help="Expiry.")
    ] = None,
    test: Annotated[bool, typer.Option("--test", help="Create an sr_test_ key.")] = False,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Create an API key and print it (it is shown once)."""
    settings = _settings(data_dir, database_url)
    try:
        narrowed = None if scopes is None else parse_scopes(s for s in scopes.split(",") if s)
    except ValueError as exc:
        fail(str(exc), code=2)
    expires_at = None if expires_in_days is None else time.time() + expires_in_days * 86400

    async def work(state: GatewayState) -> str:
        found = await state.tenants.get(tenant)
        issued = await state.keys.create(
            tenant_id=found.id, name=name, role=role, scopes=narrowed,
            expires_at=expires_at, granted_by=None, mode="test" if test else "live",
        )  # fmt: skip
        return issued.secret

    typer.echo(with_gateway(settings, work))


@keys_app.command("list")
def keys_list(
    tenant: TenantOption,
    as_json: JsonOption = False,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """List a tenant's keys (never their secrets)."""
    settings = _settings(data_dir, database_url)

    async def work(state: GatewayState) -> list[dict[str, Any]]:
        found = await state.tenants.get(tenant)
        records = await state.keys.list(found.id, after=None, limit=100_000)
        return [key_view(r) for r in records]

    rows = with_gateway(settings, work)
    _print_rows(
        rows, ["id", "name", "role", "scopes", "created_at", "expires_at", "revoked_at"], as_json
    )


@keys_app.command("rotate")
def keys_rotate(
    key_id: str,
    tenant: TenantOption,
    grace_seconds: Annotated[
        int, typer.Option("--grace-seconds", min=0, help="How long the old key keeps working.")
    ] = DEFAULT_GRACE_SECONDS,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Replace a key; print the new one. The old key works until the grace period ends."""
    settings = _settings(data_dir, database_url)

    async def work(state: GatewayState) -> str:
        found = await state.tenants.get(tenant)
        issued = await state.keys.rotate(
            found.id, key_id, grace_seconds=grace_seconds, granted_by=None
        )
        return issued.secret

    typer.echo(with_gateway(settings, work))


@keys_app.command("revoke")
def keys_revoke(
    key_id: str,
    tenant: TenantOption,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Revoke a key at once."""
    settings = _settings(data_dir, database_url)

    async def work(state: GatewayState) -> None:
        found = await state.tenants.get(tenant)
        await state.keys.revoke(found.id, key_id)

    with_gateway(settings, work)
    typer.echo(f"revoked {key_id}")


def usage(
    tenant: TenantOption,
    first: Annotated[str | None, typer.Option("--from", help="First day, YYYY-MM-DD.")] = None,
    last: Annotated[str | None, typer.Option("--to", help="Last day, YYYY-MM-DD.")] = None,
    as_json: JsonOption = False,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Usage of a tenant per day and operation."""
    settings = _settings(data_dir, database_url)
    last_day = last or utc_day(time.time())
    first_day = first or last_day[:8] + "01"

    async def work(state: GatewayState) -> list[dict[str, Any]]:
        found = await state.tenants.get(tenant)
        rows = await state.usage.query(found.id, first_day, last_day)
        return [
            {"day": r.day, "operation": r.operation, "count": r.count, "bytes": r.bytes}
            for r in rows
        ]

    _print_rows(with_gateway(settings, work), ["day", "operation", "count", "bytes"], as_json)
