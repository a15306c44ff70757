"""The embedded log's idempotency index: exact whatever happened to it.

The index is derived from the log, so every test here damages or bypasses it
in one way (another process appending, a lost or deleted index, stale
entries, a rolled-back write, erasure, trimming, an old schema) and checks
that an id stored in the log is always answered as a duplicate and an id not
stored never is.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog.testing
from alembic import command
from rocksdict import Options, Rdict

from strongroom.adapters.sqlite import chunks
from strongroom.adapters.sqlite import database as database_module
from strongroom.adapters.sqlite.database import SqliteDatabase, index_path
from strongroom.adapters.sqlite.log import SqliteEventLog
from strongroom.adapters.sqlite.record_index import MARK_PREFIX, RecordIndex, encode_key
from strongroom.adapters.store import open_store
from strongroom.api.app import create_app
from strongroom.ports import NewRecord
from support_app import make_settings, running
from support_database import migrate_sqlite

TOPIC = "payments.tokenized"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "strongroom.db"
    migrate_sqlite(path)
    return path


def _records(ids: list[str], tenant: str = "t1") -> list[NewRecord]:
    return [NewRecord(tenant, record_id, "m1", b'{"x":1}') for record_id in ids]


def _ids(count: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(count)]


class _Gateway:
    """A database and its log, as one gateway process holds them."""

    def __init__(self, path: Path) -> None:
        self.database = SqliteDatabase(path, max_queued_weight=100_000)
        self.log = SqliteEventLog(self.database)

    async def append(self, ids: list[str], tenant: str = "t1") -> tuple[set[str], set[str]]:
        result = await self.log.append(TOPIC, _records(ids, tenant))
        return set(result.accepted), set(result.duplicates)

    async def aclose(self) -> None:
        await self.database.aclose()


async def _append_and_stop(path: Path, ids: list[str], tenant: str = "t1") -> None:
    """One gateway's life: it stores ``ids`` and stops."""
    gateway = _Gateway(path)
    try:
        await gateway.append(ids, tenant=tenant)
    finally:
        await gateway.aclose()


async def _all_duplicates(path: Path, ids: list[str], tenant: str = "t1") -> None:
    """A gateway started now answers every one of ``ids`` as a duplicate."""
    gateway = _Gateway(path)
    try:
        assert await gateway.append(ids, tenant=tenant) == (set(), set(ids))
    finally:
        await gateway.aclose()


@pytest.fixture
async def gateway(db_path: Path) -> AsyncIterator[_Gateway]:
    opened = _Gateway(db_path)
    yield opened
    await opened.aclose()


def _stored_ids(path: Path) -> list[str]:
    connection = sqlite3.connect(path)
    try:
        return [record_id for _, record_id, _ in chunks.topic_ids(connection, TOPIC, 0, 2**62)]
    finally:
        connection.close()


async def test_ids_stored_before_are_duplicates_and_new_ones_are_not(gateway: _Gateway) -> None:
    first, repeated = _ids(50), _ids(50)
    assert await gateway.append(first) == (set(first), set())
    mixed = first[:25] + repeated
    accepted, duplicates = await gateway.append(mixed)
    assert (accepted, duplicates) == (set(repeated), set(first[:25]))
    # The same id under another tenant is another record.
    assert await gateway.append(first[:5], tenant="t2") == (set(first[:5]), set())


async def test_a_second_process_on_the_same_file_sees_every_record(db_path: Path) -> None:
    owner, other = _Gateway(db_path), _Gateway(db_path)
    try:
        # RocksDB lets one process hold the index; the other keeps one in memory.
        assert owner.database.record_index.persistent
        assert not other.database.record_index.persistent
        by_owner, by_other = _ids(20), _ids(20)
        await owner.append(by_owner)
        await other.append(by_other)
        assert await other.append(by_owner) == (set(), set(by_owner))
        assert await owner.append(by_other) == (set(), set(by_other))
    finally:
        await other.aclose()
        await owner.aclose()
    assert sorted(_stored_ids(db_path)) == sorted(by_owner + by_other)


async def test_an_index_deleted_while_stopped_is_rebuilt_from_the_log(db_path: Path) -> None:
    ids = _ids(300)
    await _append_and_stop(db_path, ids)
    shutil.rmtree(index_path(db_path))
    await _all_duplicates(db_path, ids)


async def test_an_unreadable_index_is_replaced_and_rebuilt(db_path: Path) -> None:
    ids = _ids(30)
    await _append_and_stop(db_path, ids)
    for file in index_path(db_path).iterdir():
        if file.is_file():
            file.write_bytes(b"not a rocksdb file")
    await _all_duplicates(db_path, ids)


async def test_an_index_with_an_unreadable_mark_is_replaced_and_rebuilt(db_path: Path) -> None:
    ids = _ids(30)
    await _append_and_stop(db_path, ids)
    damaged = Rdict(str(index_path(db_path)), Options(raw_mode=True))
    damaged[MARK_PREFIX + b"\xff\xfe"] = (7).to_bytes(8, "big")  # a topic name that is not UTF-8
    damaged.close()
    gateway = _Gateway(db_path)
    try:
        assert not gateway.database.record_index_start.in_memory
        assert gateway.database.record_index_start.records_read == len(ids)
        assert await gateway.append(ids) == (set(), set(ids))
    finally:
        await gateway.aclose()


@pytest.mark.parametrize("failing", ["GroupCommitWriter", "catch_up_all"])
async def test_a_failed_open_leaves_the_index_free_for_the_next_one(
    db_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    ids = _ids(10)
    await _append_and_stop(db_path, ids)

    def fail(*_: object, **__: object) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    target = database_module if failing == "GroupCommitWriter" else RecordIndex
    with monkeypatch.context() as patched:
        patched.setattr(target, failing, fail)
        # ``failed`` keeps the traceback, and so the half-opened database, alive
        # below: whatever that attempt opened must have been let go already.
        with pytest.raises(sqlite3.OperationalError) as failed:
            _Gateway(db_path)
    assert "disk I/O error" in str(failed.value)
    gateway = _Gateway(db_path)
    try:
        assert not gateway.database.record_index_start.in_memory
        assert await gateway.append(ids) == (set(), set(ids))
    finally:
        await gateway.aclose()


async def test_entries_lost_from_the_index_are_found_again_in_the_log(db_path: Path) -> None:
    """What a power loss can do to an index written without fsync: lose its newest writes."""
    ids = _ids(100)
    await _append_and_stop(db_path, ids)
    index = RecordIndex(index_path(db_path))
    entries = index._entries
    entries.delete(encode_key("t1", TOPIC, record_id) for record_id in ids[50:])
    entries.save_marks({TOPIC: 50})
    index.close()
    await _all_duplicates(db_path, ids)


async def test_ids_a_killed_gateway_held_in_memory_are_duplicates_after_it(
    db_path: Path,
) -> None:
    """The index writes its entries in batches; a process that dies between
    them loses the newest entries, never their records' idempotency."""
    ids = _ids(50)
    child = textwrap.dedent(
        f"""
        import asyncio, os, sys
        from pathlib import Path
        from strongroom.adapters.sqlite.database import SqliteDatabase
        from strongroom.adapters.sqlite.log import SqliteEventLog
        from strongroom.ports import NewRecord

        async def main():
            database = SqliteDatabase(Path(sys.argv[1]), max_queued_weight=1000)
            log = SqliteEventLog(database)
            for record_id in sys.argv[2:]:
                await log.append({TOPIC!r}, [NewRecord("t1", record_id, "m1", b"{{}}")])
            assert database.record_index._entries._pending, "nothing left unwritten"
            os._exit(0)

        asyncio.run(main())
        """
    )
    subprocess.run([sys.executable, "-c", child, str(db_path), *ids], check=True, timeout=120)
    assert sorted(_stored_ids(db_path)) == sorted(ids)
    await _all_duplicates(db_path, ids)


class _WritesFail:
    """A RocksDB handle whose writes fail, as on a full disk; the rest passes through."""

    def __init__(self, db: Rdict) -> None:
        self._db = db

    def write(self, batch: object) -> None:
        raise OSError("IO error: No space left on device")

    def close(self) -> None:
        self._db.close()


async def test_entries_that_cannot_be_written_at_stop_are_read_back_at_start(
    db_path: Path,
) -> None:
    ids = _ids(30)
    gateway = _Gateway(db_path)
    await gateway.append(ids)
    entries = gateway.database.record_index._entries
    assert entries._pending  # type: ignore[attr-defined]
    entries._db = _WritesFail(entries._db)  # type: ignore[attr-defined]
    await gateway.aclose()  # does not raise: the log still holds every record
    await _all_duplicates(db_path, ids)


async def test_a_stale_entry_never_makes_a_new_id_a_duplicate(gateway: _Gateway) -> None:
    stored = _ids(3)
    await gateway.append(stored)
    fresh = _ids(2)
    # Entries pointing at an offset that holds another record, and past the end.
    gateway.database.record_index._entries.put(
        [(encode_key("t1", TOPIC, fresh[0]), 0), (encode_key("t1", TOPIC, fresh[1]), 999)]
    )
    assert await gateway.append(fresh) == (set(fresh), set())
    assert await gateway.append(fresh) == (set(), set(fresh))


async def test_a_rolled_back_append_leaves_no_mark_of_its_ids(gateway: _Gateway) -> None:
    ids = _ids(10)
    index = gateway.database.record_index

    def append_then_fail(connection: sqlite3.Connection) -> None:
        SqliteEventLog.append_in(index, connection, TOPIC, _records(ids), 0.0)
        raise RuntimeError("the rest of this transaction failed")

    with pytest.raises(RuntimeError):
        await gateway.database.writer.submit(append_then_fail)
    assert await gateway.append(ids) == (set(ids), set())
    assert sorted(_stored_ids(gateway.database.path)) == sorted(ids)


async def test_an_erased_tenant_leaves_no_entry_and_its_ids_can_be_stored_again(
    gateway: _Gateway,
) -> None:
    erased, kept = _ids(20), _ids(5)
    await gateway.append(erased, tenant="gone")
    await gateway.append(kept, tenant="stays")
    assert await gateway.log.erase_tenant("gone") == 20
    index = gateway.database.record_index
    looked_up = index._entries.get([encode_key("gone", TOPIC, record_id) for record_id in erased])
    assert looked_up == [None] * 20
    assert await gateway.append(kept, tenant="stays") == (set(), set(kept))
    assert await gateway.append(erased, tenant="gone") == (set(erased), set())


async def test_trimmed_records_can_be_stored_again_and_kept_ones_cannot(gateway: _Gateway) -> None:
    ids = _ids(10)
    await gateway.append(ids)
    assert await gateway.log.trim(TOPIC, max_records=4) == 6
    assert await gateway.append(ids) == (set(ids[:6]), set(ids[6:]))


async def test_ids_repeated_within_one_commit_are_stored_once(gateway: _Gateway) -> None:
    ids = _ids(40)
    answers = await asyncio.gather(*(gateway.append(ids) for _ in range(8)))
    assert set().union(*(accepted for accepted, _ in answers)) == set(ids)
    assert sum(len(accepted) for accepted, _ in answers) == len(ids)
    assert sorted(_stored_ids(gateway.database.path)) == sorted(ids)


def _indexes_of_records(path: Path) -> list[str]:
    connection = sqlite3.connect(path)
    try:
        query = "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?"
        return [row[0] for row in connection.execute(query, ("stream_records",))]
    finally:
        connection.close()


@pytest.fixture
def old_schema_path(tmp_path: Path) -> Path:
    path = tmp_path / "old.db"
    migrate_sqlite(path, "0007")
    return path


async def test_upgrading_an_existing_log_keeps_its_records_and_their_idempotency(
    old_schema_path: Path,
) -> None:
    ids = _ids(25)
    connection = sqlite3.connect(old_schema_path)
    with connection:
        connection.executemany(
            'INSERT INTO stream_records (topic, "offset", tenant, record_id, key, appended_at, '
            "payload) VALUES (?, ?, 't1', ?, 'm1', 0, x'7b7d')",
            [(TOPIC, offset, record_id) for offset, record_id in enumerate(ids)],
        )
        connection.execute(
            "INSERT INTO stream_offsets (topic, next_offset) VALUES (?, ?)", (TOPIC, len(ids))
        )
    connection.close()
    assert len(_indexes_of_records(old_schema_path)) == 2
    migrate_sqlite(old_schema_path, "0008")
    # The unique index is gone; the by-tenant one remains.
    assert _indexes_of_records(old_schema_path) == ["stream_records_by_tenant"]
    migrate_sqlite(old_schema_path)
    gateway = _Gateway(old_schema_path)
    try:
        fresh = _ids(5)
        assert await gateway.append(ids + fresh) == (set(fresh), set(ids))
    finally:
        await gateway.aclose()
    assert sorted(_stored_ids(old_schema_path)) == sorted(ids + fresh)


def test_keys_cannot_run_into_each_other() -> None:
    assert encode_key("ab", "c", "d") != encode_key("a", "bc", "d")
    assert encode_key("a", "b", "cd") != encode_key("a", "bc", "d")
    with pytest.raises(ValueError, match="tenant"):
        encode_key("", TOPIC, "x")


async def test_an_index_newer_than_a_restored_database_is_rebuilt(db_path: Path) -> None:
    """A database restored from an older copy, next to the index it left behind."""
    backup = db_path.with_name("backup.db")
    kept = _ids(10)
    await _append_and_stop(db_path, kept, tenant="t1")
    shutil.copy(db_path, backup)
    second = _Gateway(db_path)
    await second.append(_ids(10), tenant="t2")
    # Erased after the backup: the index forgets these ids, the backup still holds them.
    await second.log.erase_tenant("t1")
    await second.aclose()
    shutil.copy(backup, db_path)
    for suffix in ("-wal", "-shm"):
        db_path.with_name(db_path.name + suffix).unlink(missing_ok=True)
    await _all_duplicates(db_path, kept, tenant="t1")


async def test_a_store_opened_beside_a_running_one_says_its_index_is_in_memory(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path, database_url=None)
    first = await open_store(settings, migrate=True)
    try:
        second = await open_store(settings)
        try:
            assert first.record_index_start is not None
            assert second.record_index_start is not None
            assert not first.record_index_start.in_memory
            assert second.record_index_start.in_memory
        finally:
            await second.aclose()
    finally:
        await first.aclose()


def test_downgrading_restores_the_unique_index(db_path: Path) -> None:
    migrate_sqlite(db_path, "0007", command.downgrade)
    assert len(_indexes_of_records(db_path)) == 2
    connection = sqlite3.connect(db_path)
    try:
        insert = (
            'INSERT INTO stream_records (topic, "offset", tenant, record_id, key, appended_at, '
            "payload) VALUES (?, ?, 't1', 'same-id', 'm1', 0, x'7b7d')"
        )
        connection.execute(insert, (TOPIC, 0))
        with pytest.raises(sqlite3.IntegrityError):
            connection.execute(insert, (TOPIC, 1))
    finally:
        connection.close()


async def test_a_gateway_beside_a_running_one_warns_that_its_index_is_in_memory(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path, database_url=None)
    with structlog.testing.capture_logs() as captured:
        async with running(create_app(settings, migrate=True)):
            assert "record_index_in_memory" not in [entry["event"] for entry in captured]
            async with running(create_app(settings)):
                pass
    warnings = [entry for entry in captured if entry["event"] == "record_index_in_memory"]
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning"


async def test_a_gateway_that_rebuilt_its_index_says_how_many_records_it_read(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path, database_url=None)
    store = await open_store(settings, migrate=True)
    try:
        await store.log.append(TOPIC, _records(_ids(40)))
    finally:
        await store.aclose()
    shutil.rmtree(index_path(settings.database_path))
    with structlog.testing.capture_logs() as captured:
        async with running(create_app(settings)):
            pass
    reports = [entry for entry in captured if entry["event"] == "record_index_caught_up"]
    # The 40 events, and the audit records the gateway's start-up wrote to payments.audit.
    assert len(reports) == 1
    assert reports[0]["records"] >= 40
    with structlog.testing.capture_logs() as captured:
        async with running(create_app(settings)):
            pass
    # A clean restart finds its index up to date.
    assert [e for e in captured if e["event"] == "record_index_caught_up"] == []
