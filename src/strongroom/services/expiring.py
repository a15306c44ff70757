"""A bounded in-process map whose entries expire a fixed time after they were put."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ExpiringMap(Generic[K, V]):
    """Entries live ``ttl`` seconds from their last ``put``; at most ``max_entries`` are kept.

    Every entry lives equally long, so the map kept in put order is also in
    expiry order, and each ``put`` drops the expired entries at its front: the
    map holds only what was put in the last ``ttl`` seconds (and past
    ``max_entries``, the oldest go first). Without that sweep, entries nobody
    asks for again would stay until the bound pushed them out: on a busy
    gateway, ``max_entries`` objects held for nothing, each one walked by
    every full garbage collection.
    """

    def __init__(self, *, ttl: float, max_entries: int) -> None:
        if ttl <= 0 or max_entries < 1:
            raise ValueError("ttl must be positive and max_entries at least 1")
        self._ttl = ttl
        self._max = max_entries
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K, now: float) -> V | None:
        """The value put under ``key`` less than ``ttl`` seconds before ``now``, else None."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= now:
            del self._entries[key]
            return None
        return entry[1]

    def put(self, key: K, value: V, now: float) -> None:
        entries = self._entries
        entries[key] = (now + self._ttl, value)
        entries.move_to_end(key)
        while entries:
            oldest = next(iter(entries.values()))
            if oldest[0] > now and len(entries) <= self._max:
                break
            entries.popitem(last=False)

    def pop(self, key: K) -> None:
        self._entries.pop(key, None)

    def drop_where(self, doomed: Callable[[K], bool]) -> None:
        """Drop every entry whose key ``doomed`` picks (a tenant's, say)."""
        for key in [key for key in self._entries if doomed(key)]:
            del self._entries[key]
