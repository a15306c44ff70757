"""The embedded store's WAL stays short under sustained writes and reads.

SQLite starts a WAL over only when a writer finds every frame copied into the
database file; with commits arriving all the time, background PASSIVE
checkpoints alone never get there and the WAL grows with every commit.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from strongroom.adapters.sqlite import writer as writer_module
from strongroom.adapters.sqlite.connection import connect
from strongroom.adapters.sqlite.writer import GroupCommitWriter

ROW_BYTES = 3000
COMMITS = 6000
IN_FLIGHT = 3
#: 18 MB are written in all.
WAL_BOUND = 8 * 2**20


def _insert(payload: bytes) -> Callable[[sqlite3.Connection], None]:
    def operation(connection: sqlite3.Connection) -> None:
        connection.execute("INSERT INTO rows (payload) VALUES (?)", (payload,))

    return operation


def _keep_reading(path: Path, stop: threading.Event) -> None:
    """Point reads all along, as the gateway's read connection makes them."""
    reader = connect(path)
    try:
        while not stop.is_set():
            reader.execute("SELECT count(*) FROM rows WHERE id = 1").fetchone()
    finally:
        reader.close()


async def test_the_wal_stays_bounded_while_commits_keep_coming(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "store.db"
    setup = connect(path)
    setup.execute("CREATE TABLE rows (id INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
    setup.close()
    monkeypatch.setattr(writer_module._Checkpointer, "INTERVAL_SECONDS", 0.02)
    monkeypatch.setattr(writer_module._Checkpointer, "RESTART_FRAMES", 64)
    writer = GroupCommitWriter(path, max_queued_weight=10_000)
    stop = threading.Event()
    reading = threading.Thread(target=_keep_reading, args=(path, stop))
    reading.start()
    largest_wal = 0
    try:
        # Always a commit in flight, as under sustained load.
        for _ in range(COMMITS // IN_FLIGHT):
            await asyncio.gather(
                *(writer.submit(_insert(os.urandom(ROW_BYTES))) for _ in range(IN_FLIGHT))
            )
            largest_wal = max(largest_wal, (tmp_path / "store.db-wal").stat().st_size)
        restarts = writer._checkpointer.restarts
    finally:
        stop.set()
        reading.join()
        writer.close()

    assert restarts >= 1
    # Bounded: the limit (64 frames, 256 KiB) plus what commits add between
    # checkpoints, whatever was written in all. (With PASSIVE checkpoints only,
    # this load leaves a WAL of 10 to 25 MB here, and more the longer it runs.)
    assert largest_wal < WAL_BOUND
    check = sqlite3.connect(path)
    assert check.execute("SELECT count(*) FROM rows").fetchone() == (COMMITS,)
    check.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
def test_checkpoints_run_below_the_priority_of_requests(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    writer = GroupCommitWriter(path, max_queued_weight=10)
    try:
        checkpointer = writer._checkpointer.native_id
        assert checkpointer is not None
        process = os.getpriority(os.PRIO_PROCESS, os.getpid())
        expected = min(19, process + writer_module._Checkpointer.BACKGROUND_NICENESS)
        deadline = time.monotonic() + 5
        while os.getpriority(os.PRIO_PROCESS, checkpointer) != expected:
            assert time.monotonic() < deadline, "the checkpointer kept the process's priority"
            time.sleep(0.01)
        # Only that thread: the writer, whose commits requests wait for, keeps its own.
        assert writer._thread.native_id is not None
        assert os.getpriority(os.PRIO_PROCESS, writer._thread.native_id) == process
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == process
    finally:
        writer.close()
