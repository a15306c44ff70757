"""One fetch per key at a time: concurrent cache misses share the first one's answer.

When a cached entry (a key record, a tenant's settings) expires under load,
every request that arrives before it is fetched again misses at the same time.
Each used to query the store on its own: a burst of new connections and
queries exactly when the process was busiest, and the requests caught in it
waited for seconds. Now one query runs and the others wait for its answer.

Rules:
1. While a fetch for a key runs, later callers for that key get its result, or
   its exception.
2. The fetch runs as a task of its own: a caller that is cancelled (its client
   went away) does not cancel it for the others.
3. Once the fetch is done the key is forgotten; the next miss fetches again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """Runs ``fetch`` once per key for all the callers that ask while it runs."""

    def __init__(self) -> None:
        self._running: dict[K, asyncio.Future[V]] = {}

    async def run(self, key: K, fetch: Callable[[], Awaitable[V]]) -> V:
        running = self._running.get(key)
        if running is None:
            running = asyncio.ensure_future(fetch())
            self._running[key] = running
            running.add_done_callback(lambda done: self._forget(key, done))
        return await asyncio.shield(running)

    def _forget(self, key: K, done: asyncio.Future[V]) -> None:
        if self._running.get(key) is done:
            del self._running[key]
        if not done.cancelled():
            # Every caller may have gone; the exception is theirs, not a stray one.
            done.exception()

    def __len__(self) -> int:
        """Fetches in flight."""
        return len(self._running)
