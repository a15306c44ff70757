"""One SQLite file shared by the adapters that live in it.

Every write to the file goes through one ``GroupCommitWriter`` (SQLite has one
writer at a time anyway), so the event log and the audit log commit together
and an audit record can share a transaction with a stream record. Reads use a
connection per thread in WAL mode, never blocking the writer.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from strongroom.adapters.sqlite.connection import connect
from strongroom.adapters.sqlite.record_index import IndexStart, RecordIndex
from strongroom.adapters.sqlite.writer import DEFAULT_COMMIT_DELAY_SECONDS, GroupCommitWriter
from strongroom.errors import StorageUnavailable

T = TypeVar("T")


def index_path(path: Path) -> Path:
    """Where the idempotency index of the log in ``path`` lives."""
    return path.with_name(path.name + ".index")


def _open_record_index(path: Path) -> tuple[RecordIndex, IndexStart]:
    index = RecordIndex(index_path(path))
    if not index.persistent:
        # Filled on its first write to each topic, by the process that needs it.
        return index, IndexStart(in_memory=True)
    # Brought up to date before the first request rather than during it.
    started = time.monotonic()
    try:
        catch_up = connect(path)
        try:
            read = index.catch_up_all(catch_up)
        finally:
            catch_up.close()
    except BaseException:
        # Left open, the index would stay locked, and every later open in this
        # process would fall back to an in-memory copy.
        index.close()
        raise
    return index, IndexStart(in_memory=False, records_read=read, seconds=time.monotonic() - started)


class SqliteDatabase:
    def __init__(
        self,
        path: Path,
        *,
        max_queued_weight: int,
        commit_delay: float = DEFAULT_COMMIT_DELAY_SECONDS,
    ) -> None:
        # The schema belongs to the migrations (``strongroom db upgrade``); this
        # only checks it is there, so it never races them.
        try:
            probe = connect(path)
            try:
                probe.execute("SELECT 1 FROM stream_chunks LIMIT 1").fetchall()
            finally:
                probe.close()
        except sqlite3.Error as exc:
            raise StorageUnavailable(
                f"no Strongroom schema in {path}; run 'strongroom db upgrade' first"
            ) from exc
        self.path = path
        self.record_index, self.record_index_start = _open_record_index(path)
        try:
            self.writer = GroupCommitWriter(
                path,
                max_queued_weight=max_queued_weight,
                commit_delay=commit_delay,
                listener=self.record_index,
            )
        except BaseException:
            self.record_index.close()
            raise
        self._readers = threading.local()
        self._all_readers: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _reader(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._readers, "connection", None)
        if connection is None:
            connection = connect(self.path)
            self._readers.connection = connection
            with self._lock:
                self._all_readers.append(connection)
        return connection

    def read_sync(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` on this thread's read connection (for code already off the loop)."""
        try:
            return work(self._reader())
        except sqlite3.Error as exc:
            raise StorageUnavailable("The store cannot be read.") from exc

    async def read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` on a read connection in a worker thread."""
        return await asyncio.to_thread(self.read_sync, work)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.writer.close)
        self.record_index.close()
        with self._lock:
            for connection in self._all_readers:
                connection.close()
            self._all_readers.clear()
