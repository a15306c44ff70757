"""The embedded log's duplicate answers stay exact under any mix of operations.

Hypothesis draws a sequence of operations on one SQLite log shared by two
gateways (one holding the persistent index, one keeping it in memory):
appends with repeated ids, appends whose transaction fails (alone, or beside
an append in the same commit), erasures, trims, restarts, crashes (the
persistent index loses what it had not written yet) and a deleted index. The
persistent index writes its entries every 1, 3 or 10,000 of them.
Before each append the oracle reads which ids the log holds straight from the
table; the append must accept exactly the others (first occurrence in the
batch), and no id may ever be stored twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strongroom.adapters.sqlite import chunks
from strongroom.adapters.sqlite.database import SqliteDatabase, index_path
from strongroom.adapters.sqlite.log import SqliteEventLog
from strongroom.ports import NewRecord
from support_database import migrate_sqlite

TOPIC = "payments.tokenized"
IDS = [f"id-{n:02d}" for n in range(12)]
TENANTS = ["t1", "t2"]

_ids = st.lists(st.sampled_from(IDS), min_size=1, max_size=6)
_gateway = st.sampled_from([0, 1])
_tenant = st.sampled_from(TENANTS)
_operation = st.one_of(
    st.tuples(st.just("append"), _gateway, _tenant, _ids),
    st.tuples(st.just("append"), _gateway, _tenant, _ids),
    st.tuples(st.just("append"), _gateway, _tenant, _ids),
    st.tuples(st.just("failed_append"), _gateway, _tenant, _ids),
    st.tuples(st.just("append_beside_failure"), _gateway, _tenant, _ids, _ids),
    st.tuples(st.just("erase"), _gateway, _tenant),
    st.tuples(st.just("trim"), _gateway, st.integers(0, 6)),
    st.tuples(st.just("restart"), _gateway),
    st.tuples(st.just("crash"), _gateway),
    st.tuples(
        st.just("delete_index"),
    ),
)


def _stored(path: Path, tenant: str) -> list[str]:
    connection = sqlite3.connect(path)
    try:
        return [record.record_id for record in chunks.read(connection, TOPIC, tenant, 0, None)]
    finally:
        connection.close()


def _records(tenant: str, ids: list[str]) -> list[NewRecord]:
    return [NewRecord(tenant, record_id, "k", b"{}") for record_id in ids]


class _Pair:
    """Two gateways on one file: the first opened holds the persistent index."""

    def __init__(self, path: Path, write_behind: int) -> None:
        self.path = path
        self.write_behind = write_behind
        self.databases: list[SqliteDatabase | None] = [None, None]
        for number in (0, 1):
            self.open(number)

    def open(self, number: int) -> None:
        database = SqliteDatabase(self.path, max_queued_weight=10_000)
        entries = database.record_index._entries
        if entries.persistent:
            entries.WRITE_BEHIND = self.write_behind  # type: ignore[attr-defined]
        self.databases[number] = database

    async def crash(self, number: int) -> None:
        """Stop as a killed process would: what the index held in memory is gone."""
        database = self.databases[number]
        assert database is not None
        entries = database.record_index._entries
        if entries.persistent:
            entries._pending.clear()  # type: ignore[attr-defined]
        await self.close(number)

    def log(self, number: int) -> SqliteEventLog:
        database = self.databases[number]
        assert database is not None
        return SqliteEventLog(database)

    async def close(self, number: int) -> None:
        database = self.databases[number]
        if database is not None:
            await database.aclose()
            self.databases[number] = None


async def _failed_append(pair: _Pair, number: int, tenant: str, ids: list[str]) -> None:
    database = pair.databases[number]
    assert database is not None

    def append_then_fail(connection: sqlite3.Connection) -> None:
        SqliteEventLog.append_in(
            database.record_index, connection, TOPIC, _records(tenant, ids), 0.0
        )
        raise RuntimeError("the rest of the transaction failed")

    with contextlib.suppress(RuntimeError):
        await database.writer.submit(append_then_fail)


async def _run(path: Path, operations: list[tuple[Any, ...]], write_behind: int) -> None:
    pair = _Pair(path, write_behind)
    try:
        for operation in operations:
            kind = operation[0]
            if kind == "append":
                _, number, tenant, ids = operation
                before = set(_stored(path, tenant))
                expected = [i for n, i in enumerate(ids) if i not in before and i not in ids[:n]]
                result = await pair.log(number).append(TOPIC, _records(tenant, ids))
                assert list(result.accepted) == expected
                assert sorted(result.duplicates) == sorted(
                    i for n, i in enumerate(ids) if i in before or i in ids[:n]
                )
            elif kind == "failed_append":
                _, number, tenant, ids = operation
                before = sorted(_stored(path, tenant))
                await _failed_append(pair, number, tenant, ids)
                assert sorted(_stored(path, tenant)) == before
            elif kind == "append_beside_failure":
                # Queued together, so both may share one transaction and its savepoints.
                _, number, tenant, ids, failing = operation
                before = set(_stored(path, tenant))
                expected = [i for n, i in enumerate(ids) if i not in before and i not in ids[:n]]
                result, _ = await asyncio.gather(
                    pair.log(number).append(TOPIC, _records(tenant, ids)),
                    _failed_append(pair, number, tenant, failing),
                )
                assert list(result.accepted) == expected
            elif kind == "erase":
                _, number, tenant = operation
                await pair.log(number).erase_tenant(tenant)
            elif kind == "trim":
                _, number, keep = operation
                await pair.log(number).trim(TOPIC, max_records=keep)
            elif kind == "restart":
                (_, number) = operation
                await pair.close(number)
                pair.open(number)
            elif kind == "crash":
                (_, number) = operation
                await pair.crash(number)
                pair.open(number)
            else:
                await pair.close(0)
                await pair.close(1)
                shutil.rmtree(index_path(path))
                pair.open(0)
                pair.open(1)
            for tenant in TENANTS:
                stored = _stored(path, tenant)
                assert len(stored) == len(set(stored)), "an id is stored twice"
    finally:
        await pair.close(1)
        await pair.close(0)


@settings(
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    operations=st.lists(_operation, min_size=1, max_size=25),
    write_behind=st.sampled_from([1, 3, 10_000]),
)
def test_duplicate_answers_match_the_log_whatever_happens(
    tmp_path: Path, operations: list[tuple[Any, ...]], write_behind: int
) -> None:
    template = tmp_path / "template.db"
    if not template.exists():
        migrate_sqlite(template)
    work = tmp_path / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    path = work / "strongroom.db"
    shutil.copy(template, path)
    asyncio.run(_run(path, operations, write_behind))
