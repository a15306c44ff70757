"""``strongroom policy``: validate, apply and dry-run risk policies.

``validate`` needs no store. ``apply`` writes to the store the gateways use,
so a running gateway enforces the new version within
``STRONGROOM_RISK_POLICY_CACHE_SECONDS``. ``test`` runs the samples through
the tenant's active policy (the default one without ``--tenant``) and the
candidate, on fresh counters fed only by the samples, and prints the
decisions that would change.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

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
from strongroom.domain.risk import PolicyError, PolicyInvalid, validate_policy_text
from strongroom.errors import InvalidRequest
from strongroom.services.risk import (
    MemoryDecisionStore,
    MemoryPolicyStore,
    RiskService,
    ShadowDiff,
)
from strongroom.services.velocity import MemorySeenCards, MemoryVelocityCounter

app = typer.Typer(help="Validate, apply and dry-run risk policies.", no_args_is_help=True)

PolicyFile = Annotated[
    Path, typer.Argument(help="Policy file, YAML or JSON.", dir_okay=False, exists=False)
]
TenantOption = Annotated[str, typer.Option("--tenant", help="Tenant id or name.")]


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {path}: {exc.__class__.__name__}")


def _located(path: Path, error: PolicyError) -> str:
    if error.line is None:
        return f"{path}: {error.message}"
    return f"{path}:{error.line}:{error.column}: {error.message}"


def _report(path: Path, errors: Sequence[PolicyError]) -> None:
    for error in errors:
        print(f"Error: {_located(path, error)}", file=sys.stderr)
    raise typer.Exit(1)


@app.command("validate")
def validate(path: PolicyFile, as_json: JsonOption = False) -> None:
    """Check a policy; print each error as FILE:LINE:COL: message (exit 1)."""
    try:
        policy = validate_policy_text(_read(path))
    except PolicyInvalid as exc:
        _report(path, exc.errors)
    factors = [factor.name for factor in policy.factors]
    if as_json:
        typer.echo(json.dumps({"valid": True, "version": policy.version, "factors": factors}))
        return
    typer.echo(f"{path}: valid, version {policy.version}, {len(factors)} factors")


@app.command("apply")
def apply(
    path: PolicyFile,
    tenant: TenantOption,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Validate, version and activate a policy for a tenant (audited)."""
    text = _read(path)
    try:
        validate_policy_text(text)
    except PolicyInvalid as exc:
        _report(path, exc.errors)
    settings = existing_data_dir(settings_or_exit(data_dir=data_dir, database_url=database_url))

    async def work(state: GatewayState) -> dict[str, Any]:
        found = await state.tenants.get(tenant)
        previous = await state.risk.policies.get_active(found.id)
        applied = await state.risk.apply_policy(found.id, text, actor="cli", now=time.time())
        return {
            "tenant": found.id,
            **applied.summary(),
            "previous_version": previous.version,
            "changed": previous.version != applied.version,
        }

    result = with_gateway(settings, work)
    if as_json:
        typer.echo(json.dumps(result))
        return
    change = "activated" if result["changed"] else "already active; recorded again"
    typer.echo(f"policy {result['version']} {change} for tenant {result['tenant']}")


def _samples(path: Path) -> list[dict[str, Any]]:
    samples = []
    for line, text in enumerate(_read(path).splitlines(), start=1):
        if not text.strip():
            continue
        try:
            sample = json.loads(text)
        except json.JSONDecodeError:
            fail(f"{path}:{line}: not a JSON object")
        if not isinstance(sample, dict):
            fail(f"{path}:{line}: not a JSON object")
        samples.append(sample)
    return samples


def _print_diffs(diffs: Sequence[ShadowDiff], samples: int, active: str, as_json: bool) -> None:
    if as_json:
        document = {
            "active_version": active,
            "samples": samples,
            "changed": [diff.to_dict() for diff in diffs],
        }
        typer.echo(json.dumps(document))
        return
    for diff in diffs:
        before, after = diff.active, diff.candidate
        typer.echo(
            f"sample {diff.line} {diff.transaction_id}: "
            f"{before.decision} ({before.score}) -> {after.decision} ({after.score})"
        )
        for reason in after.reasons:
            typer.echo(f"    {reason}")
    typer.echo(f"{len(diffs)} of {samples} decisions would change (active policy {active})")


async def _shadow(
    risk: RiskService, tenant: str, text: str, samples: list[dict[str, Any]], where: Path
) -> Any:
    try:
        diffs = await risk.shadow(tenant, text, samples, time.time(), isolated=True)
    except InvalidRequest as exc:
        detail = "; ".join(f"{e.field}: {e.message}" for e in exc.errors)
        fail(f"{where}: {exc.detail}" + (f" ({detail})" if detail else ""))
    active = await risk.policies.get_active(tenant)
    return diffs, active.version


def _offline() -> RiskService:
    return RiskService(
        policies=MemoryPolicyStore(),
        decisions=MemoryDecisionStore(max_records=1),
        velocity=MemoryVelocityCounter(),
        seen_cards=MemorySeenCards(),
        hash_ip=lambda ip: ip,
    )


@app.command("test")
def shadow_test(
    path: PolicyFile,
    transactions: Annotated[
        Path,
        typer.Option(
            "--transactions", help="Sample transactions: JSON lines of evaluate bodies (tokens)."
        ),
    ],
    tenant: Annotated[
        str | None,
        typer.Option(
            "--tenant",
            help="Compare with this tenant's active policy (default: the default policy).",
        ),
    ] = None,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Shadow mode: print the sample decisions the policy would change."""
    text = _read(path)
    try:
        validate_policy_text(text)
    except PolicyInvalid as exc:
        _report(path, exc.errors)
    samples = _samples(transactions)
    if tenant is None:
        diffs, active = asyncio.run(_shadow(_offline(), "offline", text, samples, transactions))
    else:
        settings = existing_data_dir(settings_or_exit(data_dir=data_dir, database_url=database_url))

        async def work(state: GatewayState) -> Any:
            found = await state.tenants.get(tenant)
            return await _shadow(state.risk, found.id, text, samples, transactions)

        diffs, active = with_gateway(settings, work)
    _print_diffs(diffs, len(samples), active, as_json)
