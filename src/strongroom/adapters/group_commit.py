"""Group commit on asyncio: many concurrent writes, one database transaction.

A commit costs a round trip and a WAL flush on the server, so a transaction
per request caps a gateway's throughput at the server's flush rate. Instead
each write is queued; one task takes everything queued (up to a weight bound),
hands it to the adapter's ``commit`` function as one list, and resolves every
caller's future with its own outcome after that function returned. The
PostgreSQL event, audit and decision logs and the Kafka log's SQL index use it.

Rules:
1. A future resolves only after ``commit`` returned, that is after COMMIT (or
   with the error that prevented it); nothing is acknowledged early.
2. ``commit`` returns one outcome per payload, in order: a result, or the
   exception for that payload alone (it decides how to isolate a bad payload).
3. The queue is bounded by weight (events); past the bound ``submit`` raises
   ``Backpressure`` at once instead of growing memory. Weight is released when
   the transaction that carried it has finished.
4. One transaction at a time per batcher: while it commits, the next batch
   gathers, which is what makes batches grow under load.
5. ``aclose`` commits what is queued, then stops; later submits fail with
   ``StorageUnavailable``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from strongroom.errors import Backpressure, StorageUnavailable

P = TypeVar("P")
R = TypeVar("R")


@dataclass(slots=True)
class _Job(Generic[P, R]):
    payload: P
    weight: int
    future: asyncio.Future[R]


class GroupCommit(Generic[P, R]):
    """Queues payloads and commits them in groups (see the module rules)."""

    def __init__(
        self,
        commit: Callable[[list[P]], Awaitable[list[R | Exception]]],
        *,
        max_queued_weight: int,
        max_batch_weight: int,
        what: str,
    ) -> None:
        self._commit = commit
        self._max_queued_weight = max_queued_weight
        self._max_batch_weight = max_batch_weight
        self._what = what
        self._queue: deque[_Job[P, R]] = deque()
        self._queued_weight = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def queued_weight(self) -> int:
        """Weight queued or in the transaction being committed."""
        return self._queued_weight

    def check_capacity(self, weight: int = 1) -> None:
        """Raise what ``submit`` would raise for ``weight``, without queueing anything.

        Raises:
            Backpressure: the queue is past its bound.
            StorageUnavailable: the batcher is closed.
        """
        if self._closed:
            raise StorageUnavailable(f"The {self._what} is shutting down.")
        if self._queued_weight and self._queued_weight + weight > self._max_queued_weight:
            raise Backpressure(f"The {self._what} writer is at capacity; retry shortly.")

    async def submit(self, payload: P, weight: int = 1) -> R:
        """Queue ``payload`` and return its result once its transaction committed.

        Raises:
            Backpressure: the queue is past its bound; nothing was queued.
            StorageUnavailable: the batcher is closed, or the commit failed.
        """
        self.check_capacity(weight)
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)
        self._queued_weight += weight
        self._queue.append(_Job(payload, weight, future))
        if self._task is None or self._task.done():
            # Started on first use (and again should the loop have cancelled it).
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"strongroom-{self._what}-writer"
            )
        self._wake.set()
        # A caller that goes away (a cancelled request) must not cancel the
        # write for the others sharing its transaction, so the future is shielded.
        return await asyncio.shield(future)

    def _take(self) -> list[_Job[P, R]]:
        jobs: list[_Job[P, R]] = []
        weight = 0
        while self._queue and (
            not jobs or weight + self._queue[0].weight <= self._max_batch_weight
        ):
            job = self._queue.popleft()
            jobs.append(job)
            weight += job.weight
        return jobs

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closed:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            jobs = self._take()
            try:
                outcomes = await self._commit([job.payload for job in jobs])
            except asyncio.CancelledError:
                self._fail(jobs, StorageUnavailable(f"The {self._what} writer was stopped."))
                raise
            except Exception as exc:
                outcomes = [exc] * len(jobs)
            finally:
                self._queued_weight -= sum(job.weight for job in jobs)
            for job, outcome in zip(jobs, outcomes, strict=True):
                if job.future.done():
                    continue
                if isinstance(outcome, Exception):
                    job.future.set_exception(outcome)
                else:
                    job.future.set_result(outcome)

    @staticmethod
    def _fail(jobs: list[_Job[P, R]], error: Exception) -> None:
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(error)

    async def aclose(self) -> None:
        """Commit what is queued, then stop. Idempotent."""
        self._closed = True
        self._wake.set()
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await task
        finally:
            # Only when the close itself was cancelled can jobs remain; they fail.
            self._fail(list(self._queue), StorageUnavailable(f"The {self._what} is closed."))
            self._queue.clear()


def _retrieve(future: asyncio.Future[Any]) -> None:
    # The caller may have gone away (its await was cancelled); reading the
    # outcome here keeps asyncio from reporting it as never retrieved.
    if not future.cancelled():
        future.exception()
