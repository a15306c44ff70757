"""Tests for strongroom.adapters.sqlite.chunks and the move of records into chunks.

The event-log contract tests cover reading, trimming and erasing through the
log; these cover the layout itself: the codec, chunk boundaries, and the
0009 migration both ways with records already stored.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from pathlib import Path

import pytest
from alembic import command
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.adapters.sqlite import chunks
from strongroom.adapters.sqlite.database import SqliteDatabase
from strongroom.adapters.sqlite.log import SqliteEventLog
from strongroom.ports import NewRecord, StoredRecord
from support_database import migrate_sqlite

TOPIC = "payments.tokenized"

_RECORD = st.tuples(st.text(max_size=40), st.text(max_size=20), st.binary(max_size=300))


@settings(max_examples=200)
@given(records=st.lists(_RECORD, max_size=30))
def test_a_chunk_decodes_to_exactly_the_records_encoded(
    records: list[tuple[str, str, bytes]],
) -> None:
    lengths, body = chunks.encode(records)
    assert chunks.decode(lengths, body) == records
    assert chunks.record_ids(lengths, body) == [record_id for record_id, _, _ in records]


@pytest.mark.parametrize("bad", [(None, "k", b"x"), ("id", None, b"x"), ("id", "k", None)])
def test_a_record_of_the_wrong_type_fails_as_the_database_would(
    bad: tuple[object, object, object],
) -> None:
    with pytest.raises(sqlite3.DataError):
        chunks.encode([("fine", "k", b"x"), bad])  # type: ignore[list-item]


@pytest.mark.parametrize("count", [1, 99, 100, 101, 250])
def test_long_appends_are_cut_into_bounded_contiguous_chunks(count: int) -> None:
    records = [(f"id-{n}", "k", b"p") for n in range(count)]
    rows = chunks.rows(TOPIC, "t1", 7, 1.5, records)
    assert all(len(chunks.decode(row[5], row[6])) <= chunks.RECORDS_PER_CHUNK for row in rows)
    assert [row[1] for row in rows] == list(range(7, 7 + count, chunks.RECORDS_PER_CHUNK))
    assert rows[-1][2] == 7 + count - 1
    for first, last in itertools.pairwise(rows):
        assert last[1] == first[2] + 1
    decoded = [record for row in rows for record in chunks.decode(row[5], row[6])]
    assert decoded == records


def _insert_old_rows(path: Path, rows: list[tuple[str, int, str, str, str, float, bytes]]) -> None:
    connection = sqlite3.connect(path)
    with connection:
        connection.executemany(
            'INSERT INTO stream_records (topic, "offset", tenant, record_id, key, appended_at, '
            "payload) VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        connection.executemany(
            "INSERT INTO stream_offsets (topic, next_offset) VALUES (?, ?)",
            [(TOPIC, 1000), ("other", 10_050)],
        )
    connection.close()


def _old_rows() -> list[tuple[str, int, str, str, str, float, bytes]]:
    """Two topics; tenants interleaved, times changing, a hole left by an erasure."""
    rows = []
    for offset in range(230):
        if 40 <= offset < 45:
            continue  # erased
        tenant = "t2" if offset % 50 < 10 else "t1"
        rows.append((TOPIC, offset, tenant, f"id-{offset}", f"k{offset % 3}", offset // 120, b"{}"))
    # More than the migration moves at a time, so runs continue across its pages.
    rows += [("other", n, "t1", f"o-{n}", "k", 9.0, b"%d" % n) for n in range(10_050)]
    return rows


def _chunk_rows(path: Path) -> list[tuple[str, int, int, str, float]]:
    connection = sqlite3.connect(path)
    try:
        return connection.execute(
            "SELECT topic, first_offset, last_offset, tenant, appended_at FROM stream_chunks "
            "ORDER BY topic, last_offset"
        ).fetchall()
    finally:
        connection.close()


async def _read_all(path: Path, topic: str, tenant: str) -> list[StoredRecord]:
    database = SqliteDatabase(path, max_queued_weight=10_000)
    try:
        return await SqliteEventLog(database).read(topic, tenant=tenant, after=None, limit=100_000)
    finally:
        await database.aclose()


def test_upgrading_moves_every_record_into_chunks_of_one_tenant_and_time(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    migrate_sqlite(path, "0008")
    old = _old_rows()
    _insert_old_rows(path, old)

    migrate_sqlite(path)

    for topic, tenant in [(TOPIC, "t1"), (TOPIC, "t2"), ("other", "t1")]:
        expected = [StoredRecord(*row) for row in old if row[0] == topic and row[2] == tenant]
        assert asyncio.run(_read_all(path, topic, tenant)) == expected
    stored = _chunk_rows(path)
    assert sum(last - first + 1 for _, first, last, _, _ in stored) == len(old)
    assert [(first, last) for topic, first, last, _, _ in stored if topic == "other"] == [
        (first, min(first + 99, 10_049)) for first in range(0, 10_050, 100)
    ]
    # Runs break at each change of tenant, of time and at the hole; nothing else.
    assert [(first, last) for topic, first, last, _, _ in stored if topic == TOPIC] == [
        (0, 9), (10, 39), (45, 49), (50, 59), (60, 99), (100, 109), (110, 119), (120, 149),
        (150, 159), (160, 199), (200, 209), (210, 229),
    ]  # fmt: skip


def test_downgrading_moves_every_record_back_to_a_row_each(tmp_path: Path) -> None:
    path = tmp_path / "strongroom.db"
    migrate_sqlite(path)

    async def append() -> None:
        database = SqliteDatabase(path, max_queued_weight=10_000)
        log = SqliteEventLog(database)
        try:
            await log.append(TOPIC, [NewRecord("t1", f"a{n}", "k", b"%d" % n) for n in range(150)])
            await log.append(TOPIC, [NewRecord("t2", "b", "k2", b"b")])
            # One commit each: more runs than the downgrade moves at a time.
            for n in range(120):
                await log.append(TOPIC, [NewRecord("t2", f"c{n}", "k2", b"c")])
        finally:
            await database.aclose()

    asyncio.run(append())
    before = asyncio.run(_read_all(path, TOPIC, "t1")) + asyncio.run(_read_all(path, TOPIC, "t2"))

    migrate_sqlite(path, "0008", command.downgrade)

    connection = sqlite3.connect(path)
    try:
        rows = connection.execute(
            'SELECT topic, "offset", tenant, record_id, key, appended_at, payload '
            'FROM stream_records ORDER BY "offset"'
        ).fetchall()
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    finally:
        connection.close()
    assert [StoredRecord(*row) for row in rows] == before
    assert len(rows) == 271
    assert "stream_chunks" not in tables


def test_concurrent_appends_of_one_tenant_share_chunks_and_keep_their_order(
    tmp_path: Path,
) -> None:
    path = tmp_path / "strongroom.db"
    migrate_sqlite(path)

    async def append_concurrently() -> list[set[str]]:
        database = SqliteDatabase(path, max_queued_weight=10_000)
        log = SqliteEventLog(database)
        try:
            results = await asyncio.gather(
                *(log.append(TOPIC, [NewRecord("t1", f"s{n}", "k", b"p")]) for n in range(60)),
                log.append(TOPIC, [NewRecord("t2", "other", "k", b"p")]),
            )
        finally:
            await database.aclose()
        return [set(result.accepted) for result in results]

    accepted = asyncio.run(append_concurrently())

    assert all(len(ids) == 1 for ids in accepted)
    stored = _chunk_rows(path)
    assert len(stored) < 30  # 61 requests, gathered into a few commits
    assert [(first, last) for _, first, last, _, _ in stored] == [
        (first, last) for _, first, last, _, _ in sorted(stored, key=lambda row: row[1])
    ]
    assert sum(last - first + 1 for _, first, last, _, _ in stored) == 61
    t1 = asyncio.run(_read_all(path, TOPIC, "t1"))
    # Offsets follow the order in which the appends were queued.
    assert [record.record_id for record in t1] == [f"s{n}" for n in range(60)]
    assert [record.offset for record in t1] == list(range(60))
    assert [record.record_id for record in asyncio.run(_read_all(path, TOPIC, "t2"))] == ["other"]
