"""The embedded store's writer: under load, writes arriving within the commit
delay share a commit; at light load, nothing waits for the delay."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from strongroom.adapters.sqlite.writer import BUSY_COMMIT_JOBS, GroupCommitWriter
from support_database import rows_writer

#: Each call is one commit's jobs sharing the combiner: their payloads.
Commits = list[list[str]]


def _writer(tmp_path: Path, commit_delay: float) -> GroupCommitWriter:
    return rows_writer(tmp_path, commit_delay=commit_delay)


def _recorder(commits: Commits):
    def combiner(connection: sqlite3.Connection, payloads: list[str]) -> list[str]:
        connection.executemany("INSERT INTO rows (name) VALUES (?)", [(p,) for p in payloads])
        commits.append(list(payloads))
        return payloads

    return combiner


async def _make_busy(writer: GroupCommitWriter, commits: Commits) -> None:
    """One commit of more than ``BUSY_COMMIT_JOBS`` jobs: the writer now expects more."""
    release = threading.Event()
    blocked = writer.submit(lambda connection: release.wait(10))
    combiner = _recorder(commits)
    queued = [writer.submit_combined(combiner, f"load-{n}") for n in range(BUSY_COMMIT_JOBS + 2)]
    release.set()
    await blocked
    await asyncio.gather(*queued)
    assert len(commits[-1]) == BUSY_COMMIT_JOBS + 2


async def test_under_load_writes_within_the_delay_share_one_commit(tmp_path: Path) -> None:
    writer = _writer(tmp_path, commit_delay=0.5)
    commits: Commits = []
    try:
        await _make_busy(writer, commits)
        combiner = _recorder(commits)
        first = writer.submit_combined(combiner, "first")
        await asyncio.sleep(0.1)
        second = writer.submit_combined(combiner, "second")
        assert await asyncio.gather(first, second) == ["first", "second"]
        assert commits[-1] == ["first", "second"]
    finally:
        writer.close()


async def test_at_light_load_a_write_does_not_wait_for_the_delay(tmp_path: Path) -> None:
    writer = _writer(tmp_path, commit_delay=30)
    commits: Commits = []
    combiner = _recorder(commits)
    try:
        started = time.monotonic()
        for n in range(3):
            assert await writer.submit_combined(combiner, f"alone-{n}") == f"alone-{n}"
        # A single wait for the delay would have taken 30 s.
        assert time.monotonic() - started < 10
        assert commits == [["alone-0"], ["alone-1"], ["alone-2"]]
    finally:
        writer.close()


async def test_without_a_delay_under_load_each_write_commits_when_it_comes(
    tmp_path: Path,
) -> None:
    writer = _writer(tmp_path, commit_delay=0)
    commits: Commits = []
    try:
        await _make_busy(writer, commits)
        combiner = _recorder(commits)
        assert await writer.submit_combined(combiner, "first") == "first"
        await asyncio.sleep(0.1)
        assert await writer.submit_combined(combiner, "second") == "second"
        assert commits[-2:] == [["first"], ["second"]]
    finally:
        writer.close()


def test_the_delay_must_not_be_negative(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="commit_delay"):
        _writer(tmp_path, commit_delay=-1)
