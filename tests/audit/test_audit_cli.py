"""``strongroom audit`` export, archive and verify after pruning, from the command line.

1. ``export`` prints one JSON line per record; records behind the newest checkpoint
   carry ``proof`` (``tree_size``, ``audit_path``), which verifies here with the
   independent RFC 9162 verifier, and a last line carries the checkpoint note and
   the ``verifier_key`` its signature verifies under. ``--from``/``--to`` (end
   exclusive) and ``--tenant`` filter; the export itself is recorded.
2. ``archive`` refuses a retention below 365 days (exit 2 naming
   STRONGROOM_AUDIT_RETENTION_DAYS); with the default on a fresh log it archives nothing.
3. Records pruned behind a checkpoint are gone and the rest still verifies; pruning
   past the newest checkpoint is a Conflict.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import pytest
from audit_support import (
    cli,
    cli_in_process,
    database,
    open_state,
    rfc9162_leaf_hash,
    stored_rows,
    verify,
    verify_in_process,
)
from test_proofs_independent import parse_note, signature_holds, verify_inclusion

from strongroom.errors import Conflict
from strongroom.ports import AuditQuery

pytestmark = pytest.mark.slow

SIGNED: Final = 12
FIRST_BATCH: Final = 16
TOTAL: Final = 24


def iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat()


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


async def _build(directory: Path) -> dict[str, Any]:
    """24 records over two tenants in two batches a moment apart; a checkpoint at 12."""
    async with open_state(directory) as state:
        one = await state.tenants.create("cli-one")
        two = await state.tenants.create("cli-two")
        for index in range(2, TOTAL):
            if index == FIRST_BATCH:
                time.sleep(0.02)
                boundary = time.time()
                time.sleep(0.02)
            await state.audit.record(
                "test.action", actor=f"actor-{index}", tenant=(one, two)[index % 2].id,
                details={"index": index},
            )  # fmt: skip
            if index + 1 == SIGNED:
                assert await state.audit.checkpoint() is not None
        time.sleep(0.02)
        return {
            "data_dir": state.settings.data_dir,
            "tenants": (one.id, two.id),
            "boundary": boundary,
            "end": time.time(),
            "verifier_key": state.audit.verifier_key,
        }


@pytest.fixture
def built(tmp_path: Path) -> dict[str, Any]:
    log = asyncio.run(_build(tmp_path))
    with database(log["data_dir"]) as connection:
        assert len(stored_rows(connection)) == TOTAL
    return log


def test_export_carries_proofs_that_verify_independently_and_filters(
    built: dict[str, Any],
) -> None:
    data_dir = str(built["data_dir"])
    boundary, end = iso(built["boundary"]), iso(built["end"])
    one, _ = built["tenants"]
    full = cli("audit", "export", "--data-dir", data_dir)
    assert full.returncode == 0, full.stderr
    before, between, tenant, bad = (
        cli_in_process("audit", "export", *args, "--data-dir", data_dir)
        for args in (
            ["--to", boundary],
            ["--from", boundary, "--to", end],
            ["--tenant", one, "--to", end],
            ["--from", "yesterday"],
        )
    )
    for result in (before, between, tenant):
        assert result.exit_code == 0, result.output
    assert bad.exit_code == 2
    assert "--from" in bad.stderr

    lines = json_lines(full.stdout)
    *records, last = lines
    assert set(last) == {"checkpoint", "verifier_key"}
    assert last["verifier_key"] == built["verifier_key"]
    note = parse_note(last["checkpoint"])
    assert note.tree_size == SIGNED
    assert signature_holds(note, last["verifier_key"])

    assert [r["seq"] for r in records[:TOTAL]] == list(range(TOTAL))
    for record in records[:TOTAL]:
        data = record["data"].encode()
        leaf = rfc9162_leaf_hash(data)
        assert leaf.hex() == record["leaf_hash"]
        document = json.loads(data)
        for name in ("seq", "tenant", "actor", "action", "outcome", "origin", "resource"):
            assert document[name] == record[name], name
        if record["seq"] < SIGNED:
            proof = record["proof"]
            assert proof["tree_size"] == SIGNED
            path = [bytes.fromhex(node) for node in proof["audit_path"]]
            assert verify_inclusion(record["seq"], SIGNED, leaf, path, note.root_hash), record
        else:
            assert "proof" not in record, record

    def seqs(result: Any) -> list[int]:
        return [line["seq"] for line in json_lines(result.stdout) if "seq" in line]

    assert seqs(before) == list(range(FIRST_BATCH))
    assert seqs(between) == list(range(FIRST_BATCH, TOTAL))
    assert seqs(tenant) == [0, *range(2, TOTAL, 2)]

    # Every export is itself on the record.
    with database(built["data_dir"]) as connection:
        exported = [
            json.loads(data)
            for _, data, _ in stored_rows(connection)
            if json.loads(data)["action"] == "audit.exported"
        ]
    assert len(exported) == 4
    assert all(r["actor"].startswith("cli") for r in exported)
    assert {"tenant": one, "from": None, "to": end} in [r["details"] for r in exported]


def test_archive_refuses_a_short_retention(built: dict[str, Any], tmp_path: Path) -> None:
    target = tmp_path / "archive.jsonl"
    result = cli(
        "audit", "archive", "--to", str(target), "--data-dir", str(built["data_dir"]),
        env={"STRONGROOM_AUDIT_RETENTION_DAYS": "10"},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "STRONGROOM_AUDIT_RETENTION_DAYS" in result.stderr
    assert not target.exists()

    just_below = cli_in_process(
        "audit", "archive", "--to", str(target), "--data-dir", str(built["data_dir"]),
        env={"STRONGROOM_AUDIT_RETENTION_DAYS": "364"},
    )  # fmt: skip
    assert just_below.exit_code == 2, just_below.output
    assert "STRONGROOM_AUDIT_RETENTION_DAYS" in just_below.stderr
    assert not target.exists()


def test_archive_with_the_default_retention_archives_nothing_on_a_fresh_log(
    built: dict[str, Any], tmp_path: Path
) -> None:
    target = tmp_path / "archive.jsonl"
    result = cli("audit", "archive", "--to", str(target), "--data-dir", str(built["data_dir"]))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["archived"] == 0
    assert not target.exists() or target.read_text().count('"seq"') == 0
    with database(built["data_dir"]) as connection:
        assert [seq for seq, _, _ in stored_rows(connection)] == list(range(TOTAL))
    verdict = verify_in_process(built["data_dir"])
    assert verdict.returncode == 0, verdict
    assert verdict.report["records"] == TOTAL
    # Archiving signs the log first: nothing is left unsigned.
    assert verdict.report["checkpoints"] == 2
    assert verdict.report["unsigned_tail"] == 0


async def test_pruning_behind_a_checkpoint_keeps_the_rest_verifiable(tmp_path: Path) -> None:
    async with open_state(tmp_path) as state:
        for index in range(30):
            await state.audit.record("test.action", actor=f"actor-{index}")
            if index + 1 == 20:
                assert await state.audit.checkpoint() is not None
        log = state.store.audit
        with pytest.raises(Conflict):
            await log.prune(21)
        assert await log.prune(12) == 12
        assert await log.prune(8) == 0
        left = await state.audit.query(AuditQuery(limit=1000))
        assert [r.seq for r in left] == list(range(12, 30))
        with pytest.raises(Conflict):
            await log.prune(25)
        assert await log.size() == 30

        # The log goes on after pruning, chained to the last record.
        record = await state.audit.record("test.after_prune", actor="test")
        assert record.seq == 30
        assert record.prev == left[-1].leaf
        assert await state.audit.checkpoint() is not None
        assert await log.prune(20) == 8
        assert (await state.audit.verify()).ok
        data_dir = state.settings.data_dir

    verdict = verify(data_dir)
    assert verdict.returncode == 0, verdict
    assert verdict.report["ok"] is True
    assert verdict.report["records"] == 11
    with database(data_dir) as connection:
        assert [seq for seq, _, _ in stored_rows(connection)] == list(range(20, 31))
