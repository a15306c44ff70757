"""``strongroom stream``: read topics and manage dead letters from the data dir."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
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
from strongroom.cli.stream_export import ExportFile, read_checkpoint, write_checkpoint
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


@app.command("export")
def export(
    topic: TopicOption = TOKENIZED,
    to: Annotated[
        str,
        typer.Option(
            "--to", help="stdout, or a file to append JSON lines to (the file is its checkpoint)."
        ),
    ] = "stdout",
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="With --to stdout: the file holding the last exported offset."),
    ] = None,
    start: Annotated[
        int, typer.Option("--from", min=0, help="First offset when there is nothing to resume.")
    ] = 0,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Wait for new records.")] = False,
    tenant: TenantOption = DEFAULT_TENANT,
    data_dir: DataDirOption = None,
) -> None:
    """Export a topic as JSON lines for log shippers, resuming where the last run stopped."""
    settings = existing_data_dir(settings_or_exit(data_dir=data_dir))
    try:
        output = None if to == "stdout" else ExportFile(Path(to))
        if output is not None:
            resumed = output.last_offset
        else:
            resumed = None if checkpoint is None else read_checkpoint(checkpoint)
    except (OSError, ValueError) as exc:
        fail(f"cannot resume the export: {exc}", 2)

    async def work(state: GatewayState) -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signal_number in (signal.SIGINT, signal.SIGTERM):
            # Stop between pages, so the position written last is the one exported.
            loop.add_signal_handler(signal_number, stopping.set)
        after = start - 1 if resumed is None else resumed
        while not stopping.is_set():
            records = await state.log.read(topic, tenant=tenant, after=after, limit=PAGE)
            if records:
                lines = "".join(record_line(record) + "\n" for record in records)
                after = records[-1].offset
                if output is not None:
                    output.stream.write(lines)
                    output.commit()
                else:
                    sys.stdout.write(lines)
                    sys.stdout.flush()
                    if checkpoint is not None:
                        write_checkpoint(checkpoint, after)
            if len(records) == PAGE:
                continue
            if not follow:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), FOLLOW_POLL_SECONDS)

    try:
        with_gateway(settings, work)
    finally:
        if output is not None:
            output.close()


def _start_offset(value: str) -> int | datetime:
    if value.isdigit():
        return int(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        fail(f"--from {value!r} is neither an offset nor an RFC 3339 time", 2)
    if moment.tzinfo is None:
        fail(f"--from {value!r} needs a time zone (for example 2026-11-22T10:00:00Z)", 2)
    return moment


@app.command("replay")
def replay(
    start: Annotated[
        str, typer.Option("--from", help="Offset, or RFC 3339 time, to deliver from.")
    ],
    group: Annotated[str, typer.Option("--to-group", help="Consumer group to rewind.")],
    topic: TopicOption = TOKENIZED,
    tenant: TenantOption = DEFAULT_TENANT,
    data_dir: DataDirOption = None,
) -> None:
    """Rewind a consumer group so it receives the records from an offset or time again."""
    settings = existing_data_dir(settings_or_exit(data_dir=data_dir))
    origin = _start_offset(start)

    async def work(state: GatewayState) -> int:
        if isinstance(origin, int):
            offset = origin
        else:
            found = await state.log.offset_at(topic, tenant=tenant, at=origin.timestamp())
            # Nothing at or after that time: the group waits for the next record.
            offset = await state.log.length(topic) if found is None else found
        await state.log.rewind_group(topic, group, tenant=tenant, offset=offset)
        await state.audit.record(
            "stream.group_rewound", actor=cli_actor(), tenant=tenant,
            resource=f"{topic}/{group}", details={"from": start, "offset": offset},
        )  # fmt: skip
        return offset

    offset = with_gateway(settings, work)
    typer.echo(f"group {group!r} of tenant {tenant!r} now reads {topic} from offset {offset}")


@app.command("trim")
def trim(
    keep: Annotated[int, typer.Option(min=0, help="Newest records to keep per tenant.")],
    topic: TopicOption = TOKENIZED,
    data_dir: DataDirOption = None,
) -> None:
    """Delete old records every consumer group has settled, keeping the newest per tenant."""
    settings = existing_data_dir(settings_or_exit(data_dir=data_dir))

    async def work(state: GatewayState) -> int:
        trimmed = await state.log.trim(topic, max_records=keep)
        await state.audit.record(
            "stream.trimmed", actor=cli_actor(), tenant=None, resource=topic,
            details={"keep": keep, "trimmed": trimmed},
        )  # fmt: skip
        return trimmed

    trimmed = with_gateway(settings, work)
    typer.echo(f"trimmed {trimmed} record(s) of {topic}")


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
