"""With the stream on a broker, ``payments.audit`` stays in the database's log.

The audit log publishes each record on ``payments.audit`` in the same
transaction as the hash-chained record itself, so that topic cannot move to
the broker; readers still find it through the one log the gateway exposes.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from support_cli import cli, json_lines
from support_streams import redis_stream_settings


async def test_audit_records_are_read_from_the_database_when_events_are_on_redis(
    tmp_path: Path,
) -> None:
    async with redis_stream_settings() as stream:
        env = {
            "STRONGROOM_STREAM_URL": stream["stream_url"],
            "STRONGROOM_STREAM_PREFIX": stream["stream_prefix"],
        }
        data_dir = ("--data-dir", str(tmp_path / "data"))

        def run(*args: str) -> list[dict[str, object]]:
            result = cli(*args, *data_dir, env=env)
            assert result.returncode == 0, result.stderr
            return json_lines(result.stdout) if "--json" in args else []

        await asyncio.to_thread(run, "init")
        await asyncio.to_thread(
            run, "stream", "replay", "--topic", "payments.tokenized", "--from", "0",
            "--to-group", "ledger",
        )  # fmt: skip
        audit = await asyncio.to_thread(
            run, "stream", "tail", "--topic", "payments.audit", "--from", "0", "--json",
            "--tenant", "default",
        )  # fmt: skip

        actions = [line["record"]["action"] for line in audit]
        assert "stream.group_rewound" in actions
        assert {line["topic"] for line in audit} == {"payments.audit"}
