"""Group commit: one writer thread, one transaction for many concurrent requests.

SQLite allows one writer at a time and a durable commit costs an fsync, so a
commit per request caps throughput at the disk's fsync rate. Instead every
write is queued as an operation; the writer thread takes everything queued,
runs each operation in its own savepoint inside one transaction, commits once,
and only then resolves the callers' futures. A caller is answered only after
the commit that contains its write, so an acknowledgement is always durable.

Rules:
1. A future resolves only after COMMIT returned (or with the error that
   prevented it); nothing is acknowledged from an uncommitted transaction.
2. An operation that raises is rolled back to its savepoint alone; the others
   in the same transaction still commit. (A commit with one unit uses the
   transaction itself as that savepoint.)
3. The queue is bounded by weight (events); past the bound, ``submit`` raises
   ``Backpressure`` at once instead of growing memory.
4. ``close`` drains what is queued, commits it, then stops the thread.
5. Under load (the previous commit carried at least ``BUSY_COMMIT_JOBS``
   jobs), the writer waits ``commit_delay`` seconds after the first job before
   taking the queue, so that more jobs share the commit; at light load it
   commits at once, and no write waits for the delay.
6. A job submitted ``alone`` gets a transaction of its own.
7. The ``listener`` hears of every COMMIT and of every ROLLBACK (of the
   transaction or of one savepoint), on the writer thread, before any future
   of that transaction resolves.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

from strongroom.adapters.sqlite.connection import BUSY_TIMEOUT_MS, connect
from strongroom.errors import Backpressure, StorageUnavailable

T = TypeVar("T")
Operation = Callable[[sqlite3.Connection], Any]

MAX_OPERATIONS_PER_COMMIT = 512
#: A commit with this many jobs means others are coming: the next one waits for them.
BUSY_COMMIT_JOBS: Final = 8
DEFAULT_COMMIT_DELAY_SECONDS: Final = 0.001
_STOP = object()


#: Runs many jobs' payloads in one go and returns one result per payload, in order.
Combiner = Callable[[sqlite3.Connection, list[Any]], list[Any]]


class TransactionListener(Protocol):
    """Told of each transaction's fate (rule 7); must not raise."""

    def committed(self) -> None: ...
    def rolled_back(self) -> None: ...


class _NoListener:
    def committed(self) -> None:
        pass

    def rolled_back(self) -> None:
        pass


@dataclass(slots=True)
class _Job:
    operation: Operation | None
    weight: int
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    outcome: tuple[bool, Any] = field(default=(False, None))
    combiner: Combiner | None = None
    payload: Any = None
    alone: bool = False


class GroupCommitWriter:
    """Runs write operations on one connection in one thread, committing in groups."""

    def __init__(
        self,
        path: Path,
        *,
        max_queued_weight: int,
        commit_delay: float = DEFAULT_COMMIT_DELAY_SECONDS,
        listener: TransactionListener | None = None,
    ) -> None:
        if commit_delay < 0:
            raise ValueError("commit_delay must not be negative")
        self._commit_delay = commit_delay
        self._listener: TransactionListener = listener or _NoListener()
        self._connection = connect(path)
        # Checkpoints run on their own thread (below), so a commit never waits
        # for the WAL to be copied into the database file.
        self._connection.execute("PRAGMA wal_autocheckpoint=0")
        self._checkpointer = _Checkpointer(path)
        self._max_queued_weight = max_queued_weight
        self._queued_weight = 0
        self._weight_lock = threading.Lock()
        self._queue: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="strongroom-writer", daemon=True)
        self._thread.start()

    @property
    def queued_weight(self) -> int:
        return self._queued_weight

    def submit(
        self, operation: Callable[[sqlite3.Connection], T], weight: int = 1, *, alone: bool = False
    ) -> asyncio.Future[T]:
        """Queue an operation; the returned future resolves after its commit.

        ``alone`` runs it in a transaction of its own, shared with no other job.

        Raises:
            Backpressure: the queue is past its bound.
            StorageUnavailable: the writer is closed.
        """
        return self._enqueue(weight, operation=operation, alone=alone)

    def submit_combined(
        self, combiner: Combiner, payload: Any, weight: int = 1
    ) -> asyncio.Future[Any]:
        """Queue a payload that is written together with others for the same combiner.

        The jobs of one commit that share ``combiner`` run as one call (one set of
        statements instead of one per job) inside one savepoint, so they succeed
        or fail together. Each future gets its own payload's result.

        Raises:
            Backpressure: the queue is past its bound.
            StorageUnavailable: the writer is closed.
        """
        return self._enqueue(weight, combiner=combiner, payload=payload)

    def _enqueue(
        self,
        weight: int,
        *,
        operation: Operation | None = None,
        combiner: Combiner | None = None,
        payload: Any = None,
        alone: bool = False,
    ) -> asyncio.Future[Any]:
        if self._closed:
            raise StorageUnavailable("The event log is shutting down.")
        with self._weight_lock:
            if self._queued_weight + weight > self._max_queued_weight and self._queued_weight:
                raise Backpressure("The log writer is at capacity; retry shortly.")
            self._queued_weight += weight
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.put(
            _Job(operation, weight, loop, future, combiner=combiner, payload=payload, alone=alone)
        )
        return future

    def close(self) -> None:
        """Commit everything queued, then stop the thread and close the connection."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join()
        self._checkpointer.stop()
        self._connection.close()

    def _run(self) -> None:
        busy = False
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            if busy and self._commit_delay:
                # Each commit costs a WAL flush plus work per page and per wake-up
                # of the event loop, whatever it carries. At 64 concurrent
                # single-event requests, waiting a millisecond for the requests
                # already on their way lowered the CPU per request in each of
                # eight alternating runs, by about 6% in the median.
                time.sleep(self._commit_delay)
            jobs: list[_Job] = [first]  # type: ignore[list-item]
            stop_after = False
            while len(jobs) < MAX_OPERATIONS_PER_COMMIT:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop_after = True
                    break
                jobs.append(item)  # type: ignore[arg-type]
            busy = len(jobs) >= BUSY_COMMIT_JOBS
            for transaction in _transactions(jobs):
                self._commit(transaction)
            if stop_after:
                return

    def _commit(self, jobs: list[_Job]) -> None:
        connection = self._connection
        units = _units(jobs)
        try:
            connection.execute("BEGIN IMMEDIATE")
            if len(units) == 1:
                _run_only(connection, units[0], self._listener)
            else:
                for unit in units:
                    connection.execute("SAVEPOINT op")
                    try:
                        _run(connection, unit)
                    except Exception as exc:
                        # Handed to the callers' futures; the other units still commit.
                        connection.execute("ROLLBACK TO op")
                        self._listener.rolled_back()
                        _failed(connection, unit, exc, self._listener)
                    connection.execute("RELEASE op")
            connection.execute("COMMIT")
            self._listener.committed()
        except sqlite3.Error as exc:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            self._listener.rolled_back()
            failure = StorageUnavailable("The event log could not commit the write.")
            failure.__cause__ = exc
            for job in jobs:
                job.outcome = (False, failure)
        with self._weight_lock:
            self._queued_weight -= sum(job.weight for job in jobs)
        by_loop: dict[asyncio.AbstractEventLoop, list[_Job]] = {}
        for job in jobs:
            by_loop.setdefault(job.loop, []).append(job)
        for loop, loop_jobs in by_loop.items():
            try:
                loop.call_soon_threadsafe(_resolve, loop_jobs)
            except RuntimeError:
                # The caller's loop closed while we committed; nobody awaits it.
                continue


class _Checkpointer:
    """Copies the WAL into the database file in the background, and keeps the WAL short.

    PASSIVE checkpoints never wait for readers or writers; run every
    ``INTERVAL_SECONDS``, they copy the WAL into the database file. Done on the
    commit path instead (SQLite's default), every thousandth page makes one
    commit wait for the copy and an fsync of the database file: the latency tail.

    The interval is short so that each copy is small. A checkpoint ends with an
    fsync of the database file, and while the disk flushes those pages the
    writer's own fsync of the WAL waits behind it: every commit in flight at
    that moment, and every request waiting for one, is late by the length of
    that flush. Every half second, at 1,000 risk decisions/s, the flush was long
    enough to put about 1% of answers past 10 ms; a twentieth of that work
    every 50 ms delays commits by a twentieth as much. Pages that every commit
    touches are copied more often, yet batch ingest measured the same events/s
    and CPU per event either way; an idle pass copies nothing and syncs nothing.

    A PASSIVE checkpoint alone never lets the WAL start over while commits keep
    coming (SQLite restarts it only when a writer finds every frame copied, and
    by then new ones were appended), so under sustained load it grows without
    bound, and every read searches a longer WAL index. Once the WAL is past
    ``RESTART_FRAMES`` and a PASSIVE pass has copied it all, a RESTART
    checkpoint follows at once: it copies the few frames appended meanwhile
    and makes the next commit write from the start of the file, which
    ``journal_size_limit`` then trims. RESTART holds writers back while it
    waits for readers on an older snapshot, so it waits at most
    ``RESTART_WAIT_MS`` and is tried again next time.

    The thread runs ``BACKGROUND_NICENESS`` steps below the process's CPU
    priority (Linux, where a thread has its own). A checkpoint copies thousands
    of pages in one go; at equal priority, on a busy core, the scheduler gives
    it half the CPU for tens of milliseconds, and every request in flight waits
    that much longer. Lowered, it takes the idle time between requests instead,
    which under any load short of saturation is far more than it needs.
    """

    INTERVAL_SECONDS: Final = 0.05
    #: About 16 MiB of 4 KiB pages.
    RESTART_FRAMES: Final = 4096
    RESTART_WAIT_MS: Final = 20
    BACKGROUND_NICENESS: Final = 10

    def __init__(self, path: Path) -> None:
        self._connection = connect(path)
        self._connection.execute(f"PRAGMA journal_size_limit={self.RESTART_FRAMES * 4096}")
        self._stopping = threading.Event()
        #: Completed RESTART checkpoints, for tests and diagnostics.
        self.restarts = 0
        self._thread = threading.Thread(target=self._run, name="strongroom-checkpoint", daemon=True)
        self._thread.start()

    @property
    def native_id(self) -> int | None:
        return self._thread.native_id

    def _run(self) -> None:
        lower_thread_priority(self.BACKGROUND_NICENESS)
        while not self._stopping.wait(self.INTERVAL_SECONDS):
            try:
                self.checkpoint()
            except sqlite3.Error:
                # A busy or failing checkpoint is retried next time; the WAL
                # stays valid meanwhile, only longer.
                continue

    def checkpoint(self) -> None:
        connection = self._connection
        _, frames, copied = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if frames < self.RESTART_FRAMES or copied != frames:
            return
        connection.execute(f"PRAGMA busy_timeout={self.RESTART_WAIT_MS}")
        try:
            busy, _, _ = connection.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
        finally:
            connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        if not busy:
            self.restarts += 1

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()
        # A last full checkpoint leaves a short WAL behind; if it cannot run
        # now, the next start's checkpoints will do it.
        with contextlib.suppress(sqlite3.Error):
            self._connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        self._connection.close()


def lower_thread_priority(steps: int) -> None:
    """Raise the calling thread's nice value by ``steps``; nothing where threads share one.

    Linux schedules threads as tasks, each with its own nice value; elsewhere
    ``setpriority`` on this id would lower the whole process instead.
    """
    if not sys.platform.startswith("linux"):
        return
    thread = threading.get_native_id()
    # Raising one's own nice value needs no privilege; a sandbox that refuses
    # it anyway leaves the thread as it was, which is only slower.
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, thread, os.getpriority(os.PRIO_PROCESS, thread) + steps)


def _units(jobs: list[_Job]) -> list[list[_Job]]:
    """Jobs in queue order, those sharing a combiner gathered where the first one was."""
    units: list[list[_Job]] = []
    combined: dict[Combiner, list[_Job]] = {}
    for job in jobs:
        if job.combiner is None:
            units.append([job])
        elif job.combiner in combined:
            combined[job.combiner].append(job)
        else:
            combined[job.combiner] = [job]
            units.append(combined[job.combiner])
    return units


def _run(connection: sqlite3.Connection, unit: list[_Job]) -> None:
    first = unit[0]
    if first.combiner is None:
        assert first.operation is not None
        first.outcome = (True, first.operation(connection))
        return
    results = first.combiner(connection, [job.payload for job in unit])
    for job, result in zip(unit, results, strict=True):
        job.outcome = (True, result)


def _transactions(jobs: list[_Job]) -> list[list[_Job]]:
    """Jobs in queue order, in as few transactions as rule 6 allows."""
    transactions: list[list[_Job]] = []
    shared: list[_Job] = []
    for job in jobs:
        if not job.alone:
            shared.append(job)
            continue
        if shared:
            transactions.append(shared)
            shared = []
        transactions.append([job])
    if shared:
        transactions.append(shared)
    return transactions


def _run_only(
    connection: sqlite3.Connection, unit: list[_Job], listener: TransactionListener
) -> None:
    """The commit's one unit, in a transaction already begun. The transaction
    stands in for its savepoint: under light load most commits hold one unit,
    and each statement saved is a round of the GIL the commit does not wait for."""
    try:
        _run(connection, unit)
    except Exception as exc:
        connection.execute("ROLLBACK")
        listener.rolled_back()
        connection.execute("BEGIN IMMEDIATE")
        _failed(connection, unit, exc, listener)


def _failed(
    connection: sqlite3.Connection, unit: list[_Job], exc: Exception, listener: TransactionListener
) -> None:
    """A unit raised ``exc`` and was rolled back: fail its job, or, for a combined
    unit, run its jobs one by one so that only the culprit fails."""
    if len(unit) == 1:
        unit[0].outcome = (False, exc)
    else:
        _run_each(connection, unit, listener)


def _run_each(
    connection: sqlite3.Connection, unit: list[_Job], listener: TransactionListener
) -> None:
    for job in unit:
        connection.execute("SAVEPOINT one")
        try:
            _run(connection, [job])
        except Exception as exc:
            connection.execute("ROLLBACK TO one")
            listener.rolled_back()
            job.outcome = (False, exc)
        connection.execute("RELEASE one")


def _resolve(jobs: list[_Job]) -> None:
    for job in jobs:
        if job.future.done():
            continue
        ok, value = job.outcome
        if ok:
            job.future.set_result(value)
        elif isinstance(value, sqlite3.Error):
            failure = StorageUnavailable("The event log could not commit the write.")
            failure.__cause__ = value
            job.future.set_exception(failure)
        else:
            job.future.set_exception(value)
