"""The embedded store's writer: which jobs share a transaction, and who hears of its fate."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from strongroom.adapters.sqlite.connection import connect
from strongroom.adapters.sqlite.writer import GroupCommitWriter
from support_database import rows_writer


class _Listener:
    def __init__(self) -> None:
        self.heard: list[str] = []

    def committed(self) -> None:
        self.heard.append("commit")

    def rolled_back(self) -> None:
        self.heard.append("rollback")


def _writer(tmp_path: Path, listener: _Listener) -> GroupCommitWriter:
    return rows_writer(tmp_path, listener=listener)


def _insert(name: str):
    def operation(connection: sqlite3.Connection) -> int:
        connection.execute("INSERT INTO rows (name) VALUES (?)", (name,))
        return connection.total_changes

    return operation


def _fail(connection: sqlite3.Connection) -> None:
    connection.execute("INSERT INTO rows (name) VALUES ('undone')")
    raise RuntimeError("this job fails")


async def _queued_behind_a_blocker(
    writer: GroupCommitWriter, jobs: list[tuple[object, bool]]
) -> list[object]:
    """Run ``jobs`` (operation, alone) as one batch: queued while the writer is busy."""
    started, release = threading.Event(), threading.Event()

    def block(connection: sqlite3.Connection) -> None:
        started.set()
        release.wait(10)

    blocked = writer.submit(block)
    await asyncio.to_thread(started.wait, 10)
    futures = [writer.submit(operation, alone=alone) for operation, alone in jobs]  # type: ignore[arg-type]
    release.set()
    await blocked
    return list(await asyncio.gather(*futures, return_exceptions=True))


async def test_jobs_queued_together_share_one_transaction(tmp_path: Path) -> None:
    listener = _Listener()
    writer = _writer(tmp_path, listener)
    try:
        await _queued_behind_a_blocker(writer, [(_insert(f"r{n}"), False) for n in range(3)])
        # The blocker's transaction, then one for the three.
        assert listener.heard == ["commit", "commit"]
    finally:
        writer.close()


async def test_a_job_submitted_alone_gets_a_transaction_of_its_own(tmp_path: Path) -> None:
    listener = _Listener()
    writer = _writer(tmp_path, listener)
    try:
        jobs = [(_insert("a"), False), (_insert("b"), False), (_insert("alone"), True)]
        jobs += [(_insert("c"), False)]
        await _queued_behind_a_blocker(writer, jobs)
        # The blocker's, then a and b together, then the lone job, then c.
        assert listener.heard == ["commit"] * 4
    finally:
        writer.close()


async def test_the_listener_hears_a_failed_job_rolled_back_before_the_commit(
    tmp_path: Path,
) -> None:
    listener = _Listener()
    writer = _writer(tmp_path, listener)
    try:
        results = await _queued_behind_a_blocker(writer, [(_insert("kept"), False), (_fail, False)])
        assert isinstance(results[1], RuntimeError)
        assert listener.heard == ["commit", "rollback", "commit"]
        connection = connect(tmp_path / "store.db")
        try:
            names = [row[0] for row in connection.execute("SELECT name FROM rows")]
        finally:
            connection.close()
        assert names == ["kept"]
    finally:
        writer.close()


async def test_the_listener_hears_a_lone_failure_rolled_back(tmp_path: Path) -> None:
    listener = _Listener()
    writer = _writer(tmp_path, listener)
    try:
        with pytest.raises(RuntimeError):
            await writer.submit(_fail)
        assert listener.heard == ["rollback", "commit"]
    finally:
        writer.close()
