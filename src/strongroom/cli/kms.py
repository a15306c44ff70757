"""``strongroom kms``: key-encryption key rotation, rewrapping and status."""

from __future__ import annotations

import json
import os
from typing import Annotated, Final

import typer
from pydantic import SecretStr
from rich.progress import Progress

from strongroom.adapters.kms.local import LocalKeyManager
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
from strongroom.crypto.keyring import new_master_key, parse_master_key
from strongroom.errors import StrongroomError
from strongroom.services.audit import cli_actor
from strongroom.services.key_rotation import KeyStatus

NEW_MASTER_KEY_VARIABLE: Final = "STRONGROOM_NEW_MASTER_KEY"

app = typer.Typer(
    help="Key management: KEK versions, rewrapping data keys, re-encrypting the vault.",
    no_args_is_help=True,
)


def _print_status(status: KeyStatus, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(status.view()))
        return
    kek = status.kek
    typer.echo(f"key manager: {kek.backend}")
    typer.echo(f"KEK versions: {', '.join(map(str, kek.versions))} (latest {kek.latest_version})")
    typer.echo(f"minimum decryption version: {kek.min_decryption_version}")
    for version, count in sorted(status.data_keys_by_version.items()):
        typer.echo(f"  data keys wrapped under v{version}: {count}")
    if status.behind:
        typer.echo(
            f"{status.behind} data keys behind the latest version: run 'strongroom kms rewrap'"
        )


@app.command("status")
def status(
    as_json: JsonOption = False,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """KEK versions in use, with how many data keys each one wraps."""
    settings = existing_data_dir(settings_or_exit(data_dir=data_dir, database_url=database_url))

    async def work(state: GatewayState) -> KeyStatus:
        return await state.key_rotation.status()

    _print_status(with_gateway(settings, work), as_json)


@app.command("rotate")
def rotate(
    as_json: JsonOption = False,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Create a new KEK version; new data keys are wrapped under it from now on."""
    settings = existing_data_dir(settings_or_exit(data_dir=data_dir, database_url=database_url))

    async def work(state: GatewayState) -> int:
        return await state.key_rotation.rotate(actor=cli_actor())

    version = with_gateway(settings, work)
    if as_json:
        typer.echo(json.dumps({"latest_version": version}))
    else:
        typer.echo(f"KEK rotated: new version {version}; run 'strongroom kms rewrap' next")


@app.command("rewrap")
def rewrap(
    reencrypt: Annotated[
        bool,
        typer.Option(
            "--reencrypt",
            help="Also give every tenant a fresh data key and re-seal the vault under it.",
        ),
    ] = False,
    as_json: JsonOption = False,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Re-wrap every data key under the latest KEK version (resumable, idempotent)."""
    settings = existing_data_dir(settings_or_exit(data_dir=data_dir, database_url=database_url))

    async def work(state: GatewayState) -> tuple[int, int]:
        actor = cli_actor()
        with Progress(disable=as_json, transient=True) as bar:
            task = bar.add_task("rewrapping data keys", total=None)
            moved = await state.key_rotation.rewrap(
                actor=actor,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
            resealed = 0
            if reencrypt:
                task = bar.add_task("re-encrypting the vault", total=None)
                resealed = await state.key_rotation.reencrypt(
                    actor=actor,
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                )
        return moved, resealed

    moved, resealed = with_gateway(settings, work)
    if as_json:
        typer.echo(json.dumps({"rewrapped": moved, "resealed": resealed}))
        return
    typer.echo(f"rewrapped {moved} data keys under the latest KEK version")
    if reencrypt:
        typer.echo(f"re-sealed {resealed} values under fresh data keys")


@app.command("min-version")
def min_version(
    version: Annotated[int, typer.Argument(min=1, help="The oldest KEK version still allowed.")],
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Refuse data keys wrapped under older KEK versions (rewrap first)."""
    settings = existing_data_dir(settings_or_exit(data_dir=data_dir, database_url=database_url))

    async def work(state: GatewayState) -> KeyStatus:
        current = await state.key_rotation.status()
        behind = sum(count for kek, count in current.data_keys_by_version.items() if kek < version)
        if behind:
            fail(
                f"{behind} data keys are wrapped under versions below {version}; "
                "run 'strongroom kms rewrap' first"
            )
        await state.key_rotation.set_min_decryption_version(version, actor=cli_actor())
        return await state.key_rotation.status()

    _print_status(with_gateway(settings, work), as_json=False)


@app.command("change-master-key")
def change_master_key(data_dir: DataDirOption = None) -> None:
    """Re-seal the local keyring under $STRONGROOM_NEW_MASTER_KEY (the current one must open it).

    Stop the gateways first, then start them with the new STRONGROOM_MASTER_KEY.
    """
    settings = existing_data_dir(settings_or_exit(data_dir=data_dir))
    if settings.kms_url is not None and not settings.kms_url.startswith("local:"):
        fail("the master key protects only the local keyring; this install uses a KMS", 2)
    fresh = os.environ.get(NEW_MASTER_KEY_VARIABLE)
    if not fresh:
        fail(f"set {NEW_MASTER_KEY_VARIABLE} to the new key (strongroom kms new-master-key)", 2)
    try:
        new_key = parse_master_key(fresh)
        current = settings.master_key
        manager = LocalKeyManager(
            settings.data_dir,
            None if current is None else parse_master_key(current.get_secret_value()),
        )
    except ValueError as exc:
        fail(f"{NEW_MASTER_KEY_VARIABLE}: {exc}", 2)
    except StrongroomError as exc:
        fail(str(exc), 2)
    manager.reseal(new_key)

    async def record(state: GatewayState) -> None:
        await state.audit.record("kms.master_key_changed", actor=cli_actor())

    with_gateway(settings.model_copy(update={"master_key": SecretStr(fresh)}), record)
    typer.echo("keyring re-sealed; start the gateways with the new STRONGROOM_MASTER_KEY")


@app.command("new-master-key")
def new_master_key_command() -> None:
    """Print a fresh random master key for STRONGROOM_MASTER_KEY (nothing is stored)."""
    typer.echo(new_master_key())
