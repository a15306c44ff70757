"""``strongroom stream``: read topics and manage dead letters from the data dir."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Annotated, TypeVar

import typer

from strongroom.api.state import GatewayState
from strongroom.cli.common import (
    DataDirOption,
    existing_data_dir,
    fail,
    settings_or_exit,
    with_gateway,
)
from strongroom.config import Settings
from strongroom.domain.tenancy import DEFAULT_TENANT_ID as DEFAULT_TENANT
from strongroom.domain.topics import RAW, TOKENIZED
from strongroom.ports import EventLog, StoredRecord
from strongroom.services.audit import cli_actor
from strongroom.services.card_events import raw_context

app = typer.Typer(help="Read topics and manage dead letters.", no_args_is_help=True)
dlq = typer.Typer(help="List and replay dead letters.", no_args_is_help=True)
app.add_typer(dlq, name="dlq")

T = TypeVar("T")
TopicOption = Annotated[str, typer.Option("--topic", help="Topic name.")]
TenantOption = Annotated[str, typer.Option("--tenant", help="Tenant whose records to read.")]
FOLLOW_POLL_SECONDS = 0.5
PAGE = 500


def _with_log(settings: Settings, work: Callable[[EventLog], Awaitable[T]]) -> T:
    return with_gateway(settings, lambda state: work(state.log))


def record_line(record: StoredRecord) -> str:
    return json.dumps(
        {
            "topic": record.topic,
            "offset": record.offset,
            "key": record.key,
            "tenant": record.tenant,
            "appended_at": record.appended_at,
            "record": json.loads(record.payload),
        },
        separators=(",", ":"),
    )


@app.command("tail")
def tail(
    topic: TopicOption = TOKENIZED,
    start: Annotated[int, typer.Option("--from", min=0, help="First offset to print.")] = 0,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Wait for new records.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    decrypt: Annotated[
        bool,
        typer.Option(
            "--decrypt",
            help=f"Open {RAW} records and print the original events (card numbers included).",
        ),
    ] = False,
    reason: Annotated[
        str | None,
        typer.Option(
            "--reason",
            help="Why the originals are needed (required with --decrypt; audited).",
        ),
    ] = None,
    tenant: TenantOption = DEFAULT_TENANT,
    data_dir: DataDirOption = None,
) -> None:
    """Print a topic's records in offset order."""
    settings = existing_data_dir(settings_or_exit(data_dir=data_dir))
    if decrypt and topic != RAW:
        fail(f"--decrypt applies only to --topic {RAW}", 2)
    if decrypt and not (reason and reason.strip()):
        fail("--decrypt shows card numbers: give your consent and purpose with --reason TEXT", 2)

    async def work(state: GatewayState) -> None:
        if decrypt:
            await state.audit.record(
                "stream.decrypted",
                actor=cli_actor(),
                tenant=tenant,
                resource=topic,
                details={"reason": (reason or "")[:200], "from": start, "follow": follow},
            )
        after = start - 1
        while True:
            records = await state.log.read(topic, tenant=tenant, after=after, limit=PAGE)
            for record in records:
                if decrypt:
                    record = await _opened(state, record)
                if as_json:
                    typer.echo(record_line(record))
                else:
                    typer.echo(f"{record.offset}\t{record.key}\t{record.payload.decode()}")
                after = record.offset
            if len(records) == PAGE:
                continue
            if not follow:
                return
            await asyncio.sleep(FOLLOW_POLL_SECONDS)

    try:
        with_gateway(settings, work)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


async def _opened(state: GatewayState, record: StoredRecord) -> StoredRecord:
    envelope = json.loads(record.payload)
    original = await state.data_keys.open(
        envelope["sealed"], raw_context(record.tenant, envelope["event_id"])
    )
    return replace(record, payload=original)


@dlq.command("list")
def list_dead_letters(
    topic: TopicOption = TOKENIZED,
    group: Annotated[str | None, typer.Option(help="Only this consumer group.")] = None,
    tenant: TenantOption = DEFAULT_TENANT,
    data_dir: DataDirOption = None,
) -> None:
    """List dead letters as JSON lines."""
    settings = existing_data_dir(settings_or_exit(data_dir=data_dir))
    letters = _with_log(
        settings,
        lambda log: log.dead_letters(topic, tenant=tenant, group=group, limit=1_000_000),
    )
    for letter in letters:
        typer.echo(
            json.dumps(
                {
                    "dead_letter_offset": letter.dead_letter_offset,
                    "topic": letter.topic,
                    "group": letter.group,
                    "offset": letter.offset,
                    "deliveries": letter.deliveries,
                    "dead_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(letter.dead_at)),
                    "replayed": letter.replayed,
                }
            )
        )


@dlq.command("replay")
def replay_dead_letters(
    group: Annotated[str, typer.Option(help="Consumer group to redeliver to.")],
    topic: TopicOption = TOKENIZED,
    offset: Annotated[
        list[int] | None,
        typer.Option("--dead-letter-offset", help="Replay only these dead letters (repeatable)."),
    ] = None,
    tenant: TenantOption = DEFAULT_TENANT,
    data_dir: DataDirOption = None,
) -> None:
    """Make dead letters deliverable to their group again."""
    settings = existing_data_dir(settings_or_exit(data_dir=data_dir))

    async def work(state: GatewayState) -> int:
        replayed = await state.log.replay_dead_letters(
            topic, tenant=tenant, group=group, dead_letter_offsets=offset or None
        )
        await state.audit.record(
            "stream.dead_letters_replayed", actor=cli_actor(), tenant=tenant,
            resource=f"{topic}/{group}", details={"replayed": replayed},
        )  # fmt: skip
        return replayed

    replayed = with_gateway(settings, work)
    typer.echo(f"replayed {replayed} dead letter(s) to group {group!r}")
