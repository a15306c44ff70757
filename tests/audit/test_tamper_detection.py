"""Tampering with the stored audit trail is detected, and the database refuses it first.

The log is built once in process: 2 setup records, then 40 more with checkpoints
signed at sizes 15 and 31 and at shutdown (42). Each case then copies the data dir
(and on PostgreSQL its database) and, as an attacker with direct database access,
first drops the audit triggers (a DBA can) and rewrites history.
``strongroom audit verify --json`` (a subprocess) must exit 1 naming the first
damaged sequence number and the kind of damage:

* a flipped byte in a record's data → ``modified`` at that seq;
* a flipped byte with its ``leaf`` recomputed → damage at that seq or the next
  (observed: the next record no longer chains to it, ``inserted`` at seq+1; just
  before a checkpoint the signed root no longer holds, ``modified`` at that seq);
* a deleted row → ``missing`` (``truncated`` for the last row of a signed log);
* two rows' data and leaf swapped → ``reordered`` at the first;
* a forged row inserted by shifting later seqs up → ``inserted`` at the insertion
  point (or ``reordered`` just after it when the forgery chains correctly);
* rows cut off below the newest checkpoint → ``truncated`` where the log now ends;
  with the checkpoints removed too, a checkpoint saved earlier still catches it;
* a checkpoint note with an altered root or signature, or re-signed with another
  key → ``bad_checkpoint`` at that checkpoint's size;
* the untouched log → exit 0.

With the triggers in place, UPDATE, DELETE, upserts and (on SQLite) INSERT OR REPLACE
of audit rows fail in the database, and the prune horizon only advances, never past
the newest checkpoint.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest
from audit_support import (
    Verdict,
    checkpoint_sizes,
    database,
    drop_audit_triggers,
    open_audit_app,
    rfc9162_leaf_hash,
    stored_rows,
    verify_in_process,
    verify_many,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from support_database import DATABASE_ERRORS, Connection, copy_data_dir, on_postgres

FIRST_CHECKPOINT: Final = 15
SECOND_CHECKPOINT: Final = 31
LOG_SIZE: Final = 42
FLIPPED: Final = 17
DELETED: Final = 20
SWAPPED: Final = (8, 23)
INSERTED_AT: Final = 25
TRUNCATED_TO: Final = 36
EM_DASH: Final = "\u2014 "


@dataclass
class Pristine:
    data_dir: Path
    rows: list[tuple[int, bytes, bytes]]
    checkpoints: list[int]
    notes: dict[int, str]


async def _build(directory: Path) -> Path:
    """The log; leaving the lifespan signs the last checkpoint, at LOG_SIZE."""
    async with open_audit_app(directory) as app:  # records 0 and 1: tenant and platform key
        trail = app.state.audit
        for index in range(2, LOG_SIZE):
            await trail.record(
                "test.action", actor=f"actor-{index}", tenant=app.home.id,
                resource=f"resource-{index}", details={"index": index, "note": "x" * index},
            )  # fmt: skip
            if index + 1 in (FIRST_CHECKPOINT, SECOND_CHECKPOINT):
                signed = await trail.checkpoint()
                assert signed is not None
                assert signed.checkpoint.tree_size == index + 1
        return app.data_dir


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Pristine:
    data_dir = asyncio.run(_build(tmp_path_factory.mktemp("pristine")))
    with database(data_dir) as connection:
        rows = stored_rows(connection)
        sizes = checkpoint_sizes(connection)
        notes = dict(connection.execute("SELECT tree_size, note FROM audit_checkpoints"))
    assert [seq for seq, _, _ in rows] == list(range(LOG_SIZE))
    assert sizes == [FIRST_CHECKPOINT, SECOND_CHECKPOINT, LOG_SIZE]
    return Pristine(data_dir, rows, sizes, notes)


# -- the attacker's tools -------------------------------------------------------------------


def flip_actor_byte(data: bytes) -> bytes:
    """XOR one byte of the actor's name with 0x01: still ASCII, still canonical JSON."""
    at = data.index(b'"actor":"') + len(b'"actor":"')
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def canonical(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def shift_up_from(connection: Connection, seq: int) -> None:
    """Move every row at ``seq`` or later one place up (in two steps: seq is the key)."""
    connection.execute("UPDATE audit_records SET seq = -(seq + 1) WHERE seq >= ?", (seq,))
    connection.execute("UPDATE audit_records SET seq = -seq WHERE seq < 0")


def insert_row(connection: Connection, seq: int, data: bytes) -> None:
    document = json.loads(data)
    connection.execute(
        "INSERT INTO audit_records VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            seq, document["time"], document["tenant"], document["actor"], document["action"],
            document["outcome"], data, rfc9162_leaf_hash(data),
        ),
    )  # fmt: skip


def replace_note(connection: Connection, tree_size: int, note: str) -> None:
    connection.execute(
        "UPDATE audit_checkpoints SET note = ? WHERE tree_size = ?", (note, tree_size)
    )


def split_note(note: str) -> tuple[list[str], str, bytes]:
    """(body lines, key name, key id || signature) of a signed note."""
    body, _, signature = note.partition("\n\n")
    name, _, blob = signature.rstrip("\n").removeprefix(EM_DASH).rpartition(" ")
    return body.split("\n"), name, base64.b64decode(blob)


def join_note(lines: list[str], name: str, blob: bytes) -> str:
    return "\n".join(lines) + "\n\n" + EM_DASH + name + " " + base64.b64encode(blob).decode() + "\n"


def other_root(lines: list[str]) -> list[str]:
    root = base64.b64decode(lines[2])
    altered = bytes([root[0] ^ 0x80]) + root[1:]
    return [lines[0], lines[1], base64.b64encode(altered).decode(), lines[3]]


# -- the cases -----------------------------------------------------------------------------


Tamper = Callable[[Connection, Pristine], None]


def untouched(connection: Connection, pristine: Pristine) -> None:
    return None


def modify_data(connection: Connection, pristine: Pristine) -> None:
    _, data, _ = pristine.rows[FLIPPED]
    connection.execute(
        "UPDATE audit_records SET data = ? WHERE seq = ?", (flip_actor_byte(data), FLIPPED)
    )


def rehash_at(seq: int) -> Tamper:
    def tamper(connection: Connection, pristine: Pristine) -> None:
        _, data, _ = pristine.rows[seq]
        forged = flip_actor_byte(data)
        connection.execute(
            "UPDATE audit_records SET data = ?, leaf = ? WHERE seq = ?",
            (forged, rfc9162_leaf_hash(forged), seq),
        )

    return tamper


def delete_row(seq: int) -> Tamper:
    def tamper(connection: Connection, pristine: Pristine) -> None:
        connection.execute("DELETE FROM audit_records WHERE seq = ?", (seq,))

    return tamper


def swap_rows(connection: Connection, pristine: Pristine) -> None:
    first, second = SWAPPED
    for here, there in ((first, second), (second, first)):
        _, data, leaf = pristine.rows[there]
        connection.execute(
            "UPDATE audit_records SET data = ?, leaf = ? WHERE seq = ?", (data, leaf, here)
        )


def insert_forged(*, chained: bool) -> Tamper:
    """A forged record at INSERTED_AT; chained=True links it to the record before it."""

    def tamper(connection: Connection, pristine: Pristine) -> None:
        _, model, _ = pristine.rows[INSERTED_AT]
        document = json.loads(model)
        document.update(actor="mallory", action="key.created", details={"forged": True})
        previous_leaf = pristine.rows[INSERTED_AT - 1][2]
        document["prev"] = (previous_leaf if chained else hashlib.sha256(b"x").digest()).hex()
        shift_up_from(connection, INSERTED_AT)
        insert_row(connection, INSERTED_AT, canonical(document))

    return tamper


def truncate(connection: Connection, pristine: Pristine) -> None:
    connection.execute("DELETE FROM audit_records WHERE seq >= ?", (TRUNCATED_TO,))


def truncate_and_drop_checkpoints(connection: Connection, pristine: Pristine) -> None:
    truncate(connection, pristine)
    connection.execute("DELETE FROM audit_checkpoints WHERE tree_size > ?", (TRUNCATED_TO,))


def alter_checkpoint_root(connection: Connection, pristine: Pristine) -> None:
    lines, name, blob = split_note(pristine.notes[SECOND_CHECKPOINT])
    replace_note(connection, SECOND_CHECKPOINT, join_note(other_root(lines), name, blob))


def alter_checkpoint_signature(connection: Connection, pristine: Pristine) -> None:
    lines, name, blob = split_note(pristine.notes[SECOND_CHECKPOINT])
    flipped = blob[:10] + bytes([blob[10] ^ 0x01]) + blob[11:]
    replace_note(connection, SECOND_CHECKPOINT, join_note(lines, name, flipped))


def resign_checkpoint_with_own_key(connection: Connection, pristine: Pristine) -> None:
    """A well-formed note for another root, signed by a key the attacker holds."""
    lines, name, _ = split_note(pristine.notes[SECOND_CHECKPOINT])
    lines = other_root(lines)
    attacker = Ed25519PrivateKey.generate()
    public = attacker.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    key_id = hashlib.sha256(name.encode() + b"\n\x01" + public).digest()[:4]
    body = "\n".join(lines) + "\n"
    replace_note(
        connection, SECOND_CHECKPOINT, join_note(lines, name, key_id + attacker.sign(body.encode()))
    )


@dataclass(frozen=True)
class Case:
    tamper: Tamper
    seqs: frozenset[int] = frozenset()
    damages: frozenset[str] = frozenset()
    trusted_note: int | None = None
    #: Cases beyond the basic ones run the verify command in this process (see
    #: ``audit_support.verify_in_process``); the basic ones run it as a subprocess.
    in_process: bool = False


def expect(tamper: Tamper, seqs: set[int], damages: set[str], **kw: Any) -> Case:
    return Case(tamper, frozenset(seqs), frozenset(damages), **kw)


CASES: Final[dict[str, Case]] = {
    "untouched": Case(untouched),
    "modified-data": expect(modify_data, {FLIPPED}, {"modified"}),
    # Observed: the record itself verifies, the next one no longer chains to it.
    "modified-data-and-leaf": expect(
        rehash_at(FLIPPED), {FLIPPED, FLIPPED + 1}, {"modified", "inserted", "reordered"}
    ),
    "modified-data-and-leaf-under-a-checkpoint": expect(
        rehash_at(FIRST_CHECKPOINT - 1), {FIRST_CHECKPOINT - 1}, {"modified"}, in_process=True
    ),
    "deleted-middle-row": expect(delete_row(DELETED), {DELETED}, {"missing"}),
    "deleted-first-row": expect(delete_row(0), {0}, {"missing"}, in_process=True),
    "deleted-last-signed-row": expect(
        delete_row(LOG_SIZE - 1), {LOG_SIZE - 1}, {"truncated"}, in_process=True
    ),
    "swapped-rows": expect(swap_rows, {SWAPPED[0]}, {"reordered"}),
    "inserted-forged-row": expect(
        insert_forged(chained=False), {INSERTED_AT}, {"inserted", "reordered"}
    ),
    # Observed: the forgery chains, the shifted record after it is out of place.
    "inserted-forged-row-chained": expect(
        insert_forged(chained=True),
        {INSERTED_AT, INSERTED_AT + 1},
        {"inserted", "reordered"},
        in_process=True,
    ),
    "truncated-tail": expect(truncate, {TRUNCATED_TO}, {"truncated"}),
    "truncated-tail-and-checkpoints-vs-saved-checkpoint": expect(
        truncate_and_drop_checkpoints,
        {TRUNCATED_TO},
        {"truncated"},
        trusted_note=LOG_SIZE,
        in_process=True,
    ),
    "checkpoint-root-altered": expect(
        alter_checkpoint_root, {SECOND_CHECKPOINT}, {"bad_checkpoint"}
    ),
    "checkpoint-signature-altered": expect(
        alter_checkpoint_signature, {SECOND_CHECKPOINT}, {"bad_checkpoint"}
    ),
    "checkpoint-resigned-with-another-key": expect(
        resign_checkpoint_with_own_key, {SECOND_CHECKPOINT}, {"bad_checkpoint"}, in_process=True
    ),
}


@pytest.fixture(scope="module")
def verdicts(pristine: Pristine, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Verdict]:
    """Every case tampered into its own copy, then verified (subprocesses run concurrently)."""
    root = tmp_path_factory.mktemp("tampered")
    jobs: dict[str, tuple[Path, list[str]]] = {}
    for name, case in CASES.items():
        copy = root / name / "data"
        copy_data_dir(pristine.data_dir, copy)
        with database(copy) as connection:
            if case.tamper is not untouched:
                assert drop_audit_triggers(connection), "no audit triggers to drop"
            case.tamper(connection, pristine)
        extra: list[str] = []
        if case.trusted_note is not None:
            saved = root / name / "saved-checkpoint.txt"
            saved.write_text(pristine.notes[case.trusted_note])
            extra += ["--from-checkpoint", str(saved)]
        jobs[name] = (copy, extra)
    spawned = [name for name in CASES if not CASES[name].in_process]
    results = dict(zip(spawned, verify_many([jobs[name] for name in spawned]), strict=True))
    for name in CASES:
        if CASES[name].in_process:
            data_dir, extra = jobs[name]
            results[name] = verify_in_process(data_dir, *extra)
    return results


def test_the_untouched_log_verifies(verdicts: dict[str, Verdict]) -> None:
    verdict = verdicts["untouched"]
    assert verdict.returncode == 0, verdict
    assert verdict.report["ok"] is True
    assert verdict.report["records"] == LOG_SIZE
    assert verdict.report["checkpoints"] == 3
    assert verdict.report["unsigned_tail"] == 0
    assert verdict.seq is None
    assert verdict.damage is None


@pytest.mark.parametrize("name", [name for name in CASES if name != "untouched"])
def test_tampering_is_detected_at_the_first_damaged_record(
    name: str, verdicts: dict[str, Verdict]
) -> None:
    case, verdict = CASES[name], verdicts[name]
    assert verdict.returncode == 1, verdict
    assert verdict.report["ok"] is False, verdict.report
    assert verdict.seq in case.seqs, verdict.report
    assert verdict.damage in case.damages, verdict.report
    assert verdict.report["detail"], verdict.report


def test_the_saved_checkpoint_holds_for_the_untouched_log(
    pristine: Pristine, tmp_path: Path
) -> None:
    saved = tmp_path / "saved.txt"
    saved.write_text(pristine.notes[LOG_SIZE])
    verdict = verify_in_process(pristine.data_dir, "--from-checkpoint", str(saved))
    assert verdict.returncode == 0, verdict
    assert verdict.report["ok"] is True


# -- the database's own guards ---------------------------------------------------------------


@pytest.fixture
def guarded(pristine: Pristine, tmp_path: Path) -> Iterator[Connection]:
    """A copy of the pristine log, triggers in place, and a plain connection to it."""
    copy = tmp_path / "data"
    copy_data_dir(pristine.data_dir, copy)
    with database(copy) as connection:
        yield connection


REFUSED_CHANGES: Final = {
    "update-record": "UPDATE audit_records SET actor = 'mallory' WHERE seq = 5",
    "update-record-data": "UPDATE audit_records SET data = leaf, leaf = data WHERE seq = 5",
    "upsert-record": (
        "INSERT INTO audit_records SELECT * FROM audit_records WHERE seq = 5 "
        "ON CONFLICT (seq) DO UPDATE SET actor = 'mallory'"
    ),
    "delete-record": "DELETE FROM audit_records WHERE seq = 5",
    "delete-all-records": "DELETE FROM audit_records",
    "update-node": (
        "UPDATE audit_nodes SET hash = (SELECT hash FROM audit_nodes WHERE level = 0 AND idx = 6) "
        "WHERE level = 0 AND idx = 5"
    ),
    "delete-node": "DELETE FROM audit_nodes WHERE level = 0 AND idx = 5",
    "update-checkpoint": "UPDATE audit_checkpoints SET note = 'x' WHERE tree_size = 15",
    "delete-checkpoint": "DELETE FROM audit_checkpoints WHERE tree_size = 15",
    "delete-horizon": "DELETE FROM audit_prune_horizon",
}

# REPLACE deletes the old row without firing DELETE triggers (unless recursive
# triggers are on), so it is a change the guards must refuse too.
REFUSED_REPLACEMENTS: Final = {
    "replace-record": (
        "INSERT OR REPLACE INTO audit_records SELECT seq, time, tenant, 'mallory', action, "
        "outcome, data, leaf FROM audit_records WHERE seq = 5"
    ),
    "replace-node": (
        "INSERT OR REPLACE INTO audit_nodes SELECT level, idx, zeroblob(32) FROM audit_nodes "
        "WHERE level = 0 AND idx = 5"
    ),
    "replace-checkpoint": (
        "INSERT OR REPLACE INTO audit_checkpoints SELECT tree_size, root_hash, created_at, 'x' "
        "FROM audit_checkpoints WHERE tree_size = 15"
    ),
    "replace-horizon-beyond-checkpoint": (
        "INSERT OR REPLACE INTO audit_prune_horizon VALUES (1, 1000)"
    ),
}


SNAPSHOT: Final = (
    "SELECT * FROM audit_records ORDER BY seq",
    "SELECT * FROM audit_nodes ORDER BY level, idx",
    "SELECT * FROM audit_checkpoints ORDER BY tree_size",
    "SELECT * FROM audit_prune_horizon",
)


def _snapshot(connection: Connection) -> list[list[tuple[Any, ...]]]:
    return [connection.execute(query).fetchall() for query in SNAPSHOT]


@pytest.mark.parametrize("statement", REFUSED_CHANGES.values(), ids=REFUSED_CHANGES.keys())
def test_the_database_refuses_to_change_or_delete_audit_rows(
    guarded: Connection, statement: str
) -> None:
    before = _snapshot(guarded)
    with pytest.raises(DATABASE_ERRORS, match=r"audit|prune horizon"):
        guarded.execute(statement)
    assert _snapshot(guarded) == before


@pytest.mark.skipif(
    on_postgres(),
    reason="INSERT OR REPLACE is SQLite syntax; PostgreSQL's upsert is the upsert-record case",
)
@pytest.mark.parametrize(
    "statement", REFUSED_REPLACEMENTS.values(), ids=REFUSED_REPLACEMENTS.keys()
)
def test_the_database_refuses_to_replace_audit_rows(guarded: Connection, statement: str) -> None:
    before = _snapshot(guarded)
    with pytest.raises(DATABASE_ERRORS):
        guarded.execute(statement)
    assert _snapshot(guarded) == before


def _horizon(connection: Connection) -> int:
    (value,) = connection.execute("SELECT horizon FROM audit_prune_horizon").fetchone()
    return int(value)


def test_the_prune_horizon_only_advances_and_never_past_the_newest_checkpoint(
    guarded: Connection,
) -> None:
    assert _horizon(guarded) == 0
    with pytest.raises(DATABASE_ERRORS, match="prune horizon"):
        guarded.execute("UPDATE audit_prune_horizon SET horizon = ?", (LOG_SIZE + 1,))
    assert _horizon(guarded) == 0

    guarded.execute("UPDATE audit_prune_horizon SET horizon = ?", (FIRST_CHECKPOINT,))
    assert _horizon(guarded) == FIRST_CHECKPOINT
    # Records behind the horizon may go; the first one at it may not.
    deleted = guarded.execute("DELETE FROM audit_records WHERE seq < ?", (FIRST_CHECKPOINT,))
    assert deleted.rowcount == FIRST_CHECKPOINT
    with pytest.raises(DATABASE_ERRORS, match="checkpoint"):
        guarded.execute("DELETE FROM audit_records WHERE seq = ?", (FIRST_CHECKPOINT,))

    with pytest.raises(DATABASE_ERRORS, match="prune horizon"):
        guarded.execute("UPDATE audit_prune_horizon SET horizon = ?", (FIRST_CHECKPOINT - 1,))
    guarded.execute("UPDATE audit_prune_horizon SET horizon = ?", (LOG_SIZE,))
    with pytest.raises(DATABASE_ERRORS, match="prune horizon"):
        guarded.execute("UPDATE audit_prune_horizon SET horizon = ?", (LOG_SIZE + 1,))
    assert _horizon(guarded) == LOG_SIZE
    # SQLite names the horizon; PostgreSQL refuses it as it refuses any audit row change.
    with pytest.raises(DATABASE_ERRORS, match=r"prune horizon|append-only"):
        guarded.execute("DELETE FROM audit_prune_horizon")
    assert _horizon(guarded) == LOG_SIZE
