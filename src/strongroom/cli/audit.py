"""``strongroom audit``: verify, export, checkpoint and archive the audit trail offline."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from strongroom.api.state import GatewayState
from strongroom.cli.common import (
    DatabaseUrlOption,
    DataDirOption,
    existing_data_dir,
    fail,
    settings_or_exit,
    with_gateway,
)
from strongroom.domain.audit import Verification
from strongroom.domain.checkpoints import CheckpointError, SignedCheckpoint, parse
from strongroom.ports import AuditQuery
from strongroom.services.audit import cli_actor

app = typer.Typer(
    help="Verify, export and archive the tamper-evident audit trail.", no_args_is_help=True
)

DAY = 86_400.0


def _time(value: str | None, name: str) -> float | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        fail(f"{name} must be an ISO 8601 date or time, e.g. 2026-11-22 or 2026-11-22T10:00:00Z", 2)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.now().astimezone().tzinfo)
    return parsed.timestamp()


@app.command("verify")
def verify(
    from_checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--from-checkpoint", help="A checkpoint note saved earlier, to hold the log to."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as JSON.")] = False,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Recompute the Merkle tree and check every signed checkpoint; exit 1 on any damage."""
    settings = existing_data_dir(settings_or_exit(data_dir=data_dir, database_url=database_url))
    trusted: SignedCheckpoint | None = None
    if from_checkpoint is not None:
        try:
            trusted = parse(from_checkpoint.read_text())
        except (OSError, CheckpointError) as exc:
            fail(f"cannot read the checkpoint {from_checkpoint}: {exc}", 2)

    async def work(state: GatewayState) -> Verification:
        return await state.audit.verify(trusted)

    started = time.perf_counter()
    result = with_gateway(settings, work)
    elapsed = time.perf_counter() - started
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "ok": result.ok,
                    "records": result.records,
                    "checkpoints": result.checkpoints,
                    "unsigned_tail": result.unsigned_tail,
                    "first_bad_seq": result.finding.seq if result.finding else None,
                    "damage": result.finding.damage.value if result.finding else None,
                    "detail": result.finding.detail if result.finding else None,
                    "seconds": round(elapsed, 3),
                }
            )
        )
    if result.finding is not None:
        if not as_json:
            typer.echo(f"Error: audit log damaged at {result.finding}", err=True)
        raise typer.Exit(1)
    if not as_json:
        tail = f", {result.unsigned_tail} after the last checkpoint" if result.unsigned_tail else ""
        typer.echo(
            f"audit log intact: {result.records} records, {result.checkpoints} checkpoints "
            f"verified{tail} ({elapsed:.2f} s)"
        )


@app.command("checkpoint")
def checkpoint(data_dir: DataDirOption = None, database_url: DatabaseUrlOption = None) -> None:
    """Sign a checkpoint of the current log now and print its note."""
    settings = existing_data_dir(settings_or_exit(data_dir=data_dir, database_url=database_url))

    async def work(state: GatewayState) -> SignedCheckpoint | None:
        await state.audit.checkpoint()
        return await state.audit.latest_checkpoint()

    signed = with_gateway(settings, work)
    if signed is None:
        fail("the audit log is empty; there is nothing to sign")
    typer.echo(signed.text(), nl=False)


@app.command("export")
def export(
    first: Annotated[str | None, typer.Option("--from", help="First time (ISO 8601).")] = None,
    last: Annotated[
        str | None, typer.Option("--to", help="End time, exclusive (ISO 8601).")
    ] = None,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's records.")] = None,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Records as JSON lines, each with its inclusion proof against the newest checkpoint."""
    settings = existing_data_dir(settings_or_exit(data_dir=data_dir, database_url=database_url))
    query = AuditQuery(tenant=tenant, since=_time(first, "--from"), until=_time(last, "--to"))

    async def work(state: GatewayState) -> None:
        latest = await state.audit.latest_checkpoint()
        async for item in state.audit.export(query):
            typer.echo(json.dumps(item, separators=(",", ":")))
        if latest is not None:
            typer.echo(
                json.dumps({"checkpoint": latest.text(), "verifier_key": state.audit.verifier_key})
            )
        await state.audit.record(
            "audit.exported",
            actor=cli_actor(),
            details={"tenant": tenant, "from": first, "to": last},
        )

    with_gateway(settings, work)


@app.command("archive")
def archive(
    to: Annotated[Path, typer.Option("--to", help="File to write the archived records to.")],
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Archive records older than the retention period to a signed file, then prune them.

    Only records behind a signed checkpoint are pruned, so what remains still verifies.
    """
    settings = existing_data_dir(settings_or_exit(data_dir=data_dir, database_url=database_url))
    cutoff = time.time() - settings.audit_retention_days * DAY

    async def work(state: GatewayState) -> dict[str, Any]:
        await state.audit.checkpoint()
        latest = await state.audit.latest_checkpoint()
        old = await state.audit.query(AuditQuery(until=cutoff, limit=10_000_000))
        if latest is None or not old:
            return {"archived": 0}
        boundary = min(old[-1].seq + 1, latest.checkpoint.tree_size)
        kept = [record for record in old if record.seq < boundary]
        with to.open("x") as handle:
            for record in kept:
                handle.write(json.dumps({**record.view(), "data": record.data.decode()}) + "\n")
            handle.write(
                json.dumps({"checkpoint": latest.text(), "verifier_key": state.audit.verifier_key})
                + "\n"
            )
        pruned = await state.store.audit.prune(boundary)
        await state.audit.record(
            "audit.archived", actor=cli_actor(),
            details={"archived": len(kept), "pruned_before_seq": boundary, "file": to.name},
        )  # fmt: skip
        return {"archived": len(kept), "pruned": pruned, "before_seq": boundary}

    try:
        typer.echo(json.dumps(with_gateway(settings, work)))
    except FileExistsError:
        fail(f"{to} exists; archive files are never overwritten")
