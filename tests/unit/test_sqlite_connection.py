"""Every SQLite connection gets the shared pragmas, even when opened together with others.

Switching a new file to WAL can answer "database is locked" at once, without
waiting, while another connection opens the same file; gateways and CLI
commands started together must still all open it.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from strongroom.adapters.sqlite.connection import apply_pragmas, connect


class _LockedAtFirst:
    """An ``execute`` whose WAL switch finds the file locked ``times`` times."""

    def __init__(self, times: int, error: str = "database is locked") -> None:
        self.times = times
        self.error = error
        self.statements: list[str] = []

    def __call__(self, sql: str) -> None:
        self.statements.append(sql)
        if sql == "PRAGMA journal_mode=WAL" and self.times > 0:
            self.times -= 1
            raise sqlite3.OperationalError(self.error)


def test_a_locked_wal_switch_is_retried_until_it_succeeds() -> None:
    execute = _LockedAtFirst(times=3)
    apply_pragmas(execute)
    assert execute.statements.count("PRAGMA journal_mode=WAL") == 4
    assert "PRAGMA synchronous=FULL" in execute.statements
    assert "PRAGMA secure_delete=ON" in execute.statements


def test_the_busy_timeout_is_set_before_anything_that_can_wait() -> None:
    execute = _LockedAtFirst(times=0)
    apply_pragmas(execute)
    assert execute.statements[0].startswith("PRAGMA busy_timeout=")


def test_other_errors_are_not_retried() -> None:
    execute = _LockedAtFirst(times=1, error="disk I/O error")
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        apply_pragmas(execute)
    assert execute.statements.count("PRAGMA journal_mode=WAL") == 1


def test_connections_opening_a_new_file_together_all_get_wal(tmp_path: Path) -> None:
    failures: list[BaseException] = []
    modes: list[str] = []

    def open_and_write(path: Path, start: threading.Barrier) -> None:
        start.wait()
        try:
            connection = connect(path)
            try:
                connection.execute("CREATE TABLE IF NOT EXISTS t (x)")
                modes.append(connection.execute("PRAGMA journal_mode").fetchone()[0])
            finally:
                connection.close()
        except BaseException as exc:  # collected and asserted below
            failures.append(exc)

    for attempt in range(150):
        path = tmp_path / f"store-{attempt}.db"
        start = threading.Barrier(4)
        threads = [threading.Thread(target=open_and_write, args=(path, start)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    assert failures == []
    assert modes == ["wal"] * 600
