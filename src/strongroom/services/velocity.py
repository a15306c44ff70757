"""Velocity counters and the first-seen card register, with in-process backends.

Rules every ``VelocityCounter`` keeps (the behavioural suite in
``tests/risk/test_velocity.py`` runs against each backend):

1. ``observe`` records one event under a key and returns, for each window
   ``w``, the totals of the events of that key with a timestamp above
   ``now - w``, the new one included.
2. An event is recorded once per (key, ``event_id``): observing it again
   (an idempotent replay, or a second gateway racing the first) changes no
   total and keeps its first timestamp.
3. ``peek`` records nothing: it answers as if the event had been observed,
   so a dry run sees what a live evaluation would.
4. Memory is bounded: a key keeps events only as long as its longest window
   (or ``retain``) asked for, at most ``max_events_per_key`` of them (past that, the oldest
   are dropped and counts saturate there), and the whole counter keeps at
   most ``max_events`` events in at most ``max_keys`` keys, dropping the
   least recently used keys first.

A ``SeenCards`` register answers "is this the first time the card is seen?",
true again for a replay of the transaction that first showed it.
"""

from __future__ import annotations

import struct
from abc import ABC, abstractmethod
from array import array
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

DEFAULT_MAX_KEYS: Final = 100_000
DEFAULT_MAX_EVENTS: Final = 1_000_000
DEFAULT_MAX_EVENTS_PER_KEY: Final = 10_000
DEFAULT_MAX_CARDS: Final = 1_000_000
#: A card unseen for this long counts as first seen again.
DEFAULT_SEEN_CARD_SECONDS: Final = 400 * 24 * 3600
#: A series compacts its arrays once this many (and over half) of its events are dropped.
COMPACT_AFTER: Final = 64
_MODULUS: Final = 1 << 64
_MASK64: Final = _MODULUS - 1
_INT64_MAX: Final = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class VelocityTotals:
    """Events in one window: how many, and their summed amount (None unless asked for)."""

    count: int
    amount: int | None


@dataclass(frozen=True, slots=True)
class VelocityQuery:
    """One key and the windows (seconds) to total it over; ``sums`` asks for amounts.

    ``retain`` keeps the key's events at least that long even if no window asks
    for them (so a policy tried in shadow mode finds history to count).
    """

    key: str
    windows: tuple[int, ...]
    sums: bool = False
    retain: int = 0

    @property
    def retention(self) -> int:
        return max((self.retain, *self.windows))


class VelocityCounter(ABC):
    """Sliding-window event counts per key (rules 1–4 above)."""

    @abstractmethod
    async def observe_many(
        self, event_id: str, amount: int, now: float, queries: Sequence[VelocityQuery]
    ) -> list[tuple[VelocityTotals, ...]]:
        """Record the event under every query's key; totals per query and window.

        Raises:
            StorageUnavailable: a shared backend cannot be reached; nothing is
                known about what was recorded, and a retry is safe (rule 2).
        """

    @abstractmethod
    async def peek_many(
        self, event_id: str, amount: int, now: float, queries: Sequence[VelocityQuery]
    ) -> list[tuple[VelocityTotals, ...]]:
        """Totals as ``observe_many`` would return them, recording nothing.

        Raises:
            StorageUnavailable: a shared backend cannot be reached.
        """

    async def observe(
        self, key: str, event_id: str, amount: int, now: float, windows: Sequence[int]
    ) -> tuple[VelocityTotals, ...]:
        """``observe_many`` for one key, with amount sums."""
        (totals,) = await self.observe_many(
            event_id, amount, now, [VelocityQuery(key, tuple(windows), sums=True)]
        )
        return totals

    async def peek(
        self, key: str, event_id: str, amount: int, now: float, windows: Sequence[int]
    ) -> tuple[VelocityTotals, ...]:
        """``peek_many`` for one key, with amount sums."""
        (totals,) = await self.peek_many(
            event_id, amount, now, [VelocityQuery(key, tuple(windows), sums=True)]
        )
        return totals

    async def aclose(self) -> None:  # noqa: B027 - in-process counters hold nothing to close
        """Release connections; the counter is not used afterwards."""


def _wrapped(total: int) -> int:
    """``total`` modulo 2^64, as the signed 64-bit integer an ``array("q")`` holds."""
    total &= _MASK64
    return total - _MODULUS if total > _INT64_MAX else total


_DOUBLE: Final = struct.Struct("=d")
_INT64: Final = struct.Struct("=q")
_WIDTH: Final = 8
#: Positions in a series' ``meta``.
_LARGEST, _START, _RETENTION = 0, 1, 2
#: What a key keeps besides its ids: its event times, id hashes and running
#: sums packed in bytearrays, and its ``meta`` (largest amount, first live
#: event, retention). See ``_Series``.
_Stored = tuple[bytearray, bytearray, bytearray, bytearray]


def _doubles(packed: bytearray) -> memoryview[float]:
    return memoryview(packed).cast("d")


def _int64s(packed: bytearray) -> memoryview[int]:
    return memoryview(packed).cast("q")


class _Series:
    """One key's events, oldest first: times, id hashes and running amount sums.

    Totals over a window are two binary searches and a subtraction, not a walk
    over the window's events: a hot key (one merchant, one card under attack)
    holds thousands of events, and every evaluation asks for its totals.
    Dropped events advance ``start``; the arrays are compacted once more than
    half of them is dropped, so a drop costs O(1) amortized.

    Stored where Python's cycle collector does not look: a full collection
    stops the event loop for as long as it takes to visit every tracked
    object, and a counter under load holds a hundred thousand keys. A key
    keeps a plain tuple (``_Stored``) of bytearrays and, apart, a dict of ints
    to strings: CPython tracks neither bytearrays nor such a dict, and stops
    tracking the tuple at the first collection it survives. (A tuple holding
    the dict would stay tracked: a dict may come to hold tracked objects.)
    This class is a short-lived view over them, made per call, reading the
    bytearrays through typed memoryviews that never outlive a statement that
    resizes them. Kept as objects of their own with ``array``s (each one a
    tracked object), 100,000 keys made every full collection about 35 ms;
    held in lists and sets, the events made it tens of milliseconds more,
    about once a second at 1,000 evaluations/s.

    Running sums are kept modulo 2^64 (an int64 could overflow), so a window's
    amount, the difference of two of them, is exact while the true total is
    below 2^64: always when its events times the largest amount seen stay
    below that, and otherwise it is summed event by event (each amount is the
    difference of two neighbouring sums).

    ``ids`` maps ``hash(event_id)`` to the event id. Two ids with the same hash
    (about one chance in 2^64 a pair; ``str`` hashes are keyed per process) are
    both counted: an event is taken for a replay only when its own id is found.
    """

    __slots__ = ("at", "hashed", "hashes", "ids", "meta", "stored", "summed", "sums", "times")

    def __init__(self, stored: _Stored | None = None, ids: dict[int, str] | None = None) -> None:
        if stored is None:
            #: ``sums[i]``: the amounts of every event up to ``i``, dropped ones
            #: included, modulo 2^64.
            stored = (bytearray(), bytearray(), bytearray(), bytearray(3 * _WIDTH))
        self.stored = stored
        self.times, self.hashes, self.sums, meta = stored
        self.ids = {} if ids is None else ids
        # ``meta`` never changes size, so this view may live as long as the series.
        self.meta = _int64s(meta)
        self._view()

    def _view(self) -> None:
        """Typed views of the packed arrays: times, id hashes and sums."""
        self.at = _doubles(self.times)
        self.hashed = _int64s(self.hashes)
        self.summed = _int64s(self.sums)

    def _release(self) -> None:
        """Give up the views: a bytearray with a live view cannot change size."""
        self.at.release()
        self.hashed.release()
        self.summed.release()

    @property
    def start(self) -> int:
        return int(self.meta[_START])

    @property
    def retention(self) -> int:
        return int(self.meta[_RETENTION])

    def retain(self, seconds: int) -> None:
        """Keep events for at least ``seconds``."""
        self.meta[_RETENTION] = max(self.meta[_RETENTION], seconds)

    def __len__(self) -> int:
        return len(self.at) - self.meta[_START]

    def __contains__(self, event_id: str) -> bool:
        return self.ids.get(hash(event_id)) == event_id

    def _sum_before(self, index: int) -> int:
        return int(self.summed[index - 1]) if index else 0

    def _drop_to(self, index: int) -> int:
        """Drop the events before ``index``; how many were dropped."""
        start = self.start
        dropped = index - start
        ids = self.ids
        for hashed in self.hashed[start:index]:
            ids.pop(hashed, None)
        if index > COMPACT_AFTER and 2 * index > len(self.at):
            base = self._sum_before(index)
            self._release()
            del self.times[: index * _WIDTH]
            del self.hashes[: index * _WIDTH]
            del self.sums[: index * _WIDTH]
            self._view()
            summed = self.summed
            summed[:] = array("q", [_wrapped(total - base) for total in summed])
            index = 0
        self.meta[_START] = index
        return dropped

    def drop_oldest(self) -> None:
        self._drop_to(self.start + 1)

    def trim(self, now: float) -> int:
        """Drop events past the retention; how many were dropped."""
        meta = self.meta
        return self._drop_to(bisect_right(self.at, now - meta[_RETENTION], meta[_START]))

    def add(self, at: float, event_id: str, amount: int) -> None:
        if not 0 <= amount <= _INT64_MAX:
            raise ValueError("a velocity amount must be between 0 and 2^63 - 1")
        hashed = hash(event_id)
        self.ids.setdefault(hashed, event_id)
        self.meta[_LARGEST] = max(self.meta[_LARGEST], amount)
        stored = len(self.at)
        if not len(self) or self.at[stored - 1] <= at:
            index = stored
        else:
            # Out of order (another clock, a late retry): keep the events sorted;
            # the sums after it all grow by its amount. Rare, so O(n) is fine.
            index = bisect_right(self.at, at, self.start)
        total = _wrapped(self._sum_before(index) + amount)
        at_byte = index * _WIDTH
        self._release()
        self.times[at_byte:at_byte] = _DOUBLE.pack(at)
        self.hashes[at_byte:at_byte] = _INT64.pack(hashed)
        self.sums[at_byte:at_byte] = _INT64.pack(total)
        self._view()
        summed = self.summed
        for later in range(index + 1, len(summed)):
            summed[later] = _wrapped(summed[later] + amount)

    def _amount_from(self, first: int) -> int:
        """The exact total of the events from ``first`` on."""
        sums = self.summed
        events = len(sums) - first
        if events * self.meta[_LARGEST] < _MODULUS:
            return int(sums[-1] - self._sum_before(first)) & _MASK64
        previous = self._sum_before(first)
        total = 0
        for index in range(first, len(sums)):
            total += (sums[index] - previous) & _MASK64
            previous = sums[index]
        return total

    def totals(self, now: float, window: int, extra: int | None) -> tuple[int, int]:
        """Count and amount above ``now - window``, plus an unrecorded ``extra`` event."""
        count, amount = (1, extra) if extra is not None else (0, 0)
        at, start = self.at, self.meta[_START]
        if len(at) == start:
            return count, amount
        first = bisect_right(at, now - window, start)
        return count + len(at) - first, amount + self._amount_from(first)


class MemoryVelocityCounter(VelocityCounter):
    """``VelocityCounter`` for one process (the pilot's).

    Every call runs without awaiting, so it is atomic on the event loop.
    Memory: at most ``max_events`` events (about 100 bytes each plus the
    event id) in at most ``max_keys`` keys.
    """

    def __init__(
        self,
        *,
        max_keys: int = DEFAULT_MAX_KEYS,
        max_events: int = DEFAULT_MAX_EVENTS,
        max_events_per_key: int = DEFAULT_MAX_EVENTS_PER_KEY,
    ) -> None:
        if min(max_keys, max_events, max_events_per_key) < 1:
            raise ValueError("velocity counter bounds must be at least 1")
        #: Keys, least recently used first, and (apart, see ``_Series``) their ids.
        self._series: OrderedDict[str, _Stored] = OrderedDict()
        self._ids: dict[str, dict[int, str]] = {}
        self._max_keys = max_keys
        self._max_events = max_events
        # A key never holds more than the whole counter may.
        self._max_per_key = min(max_events_per_key, max_events)
        self._events = 0

    @property
    def size(self) -> tuple[int, int]:
        """(keys, events) held now."""
        return len(self._series), self._events

    async def observe_many(
        self, event_id: str, amount: int, now: float, queries: Sequence[VelocityQuery]
    ) -> list[tuple[VelocityTotals, ...]]:
        results = []
        for query in queries:
            stored = self._series.get(query.key)
            if stored is None:
                series = _Series()
                self._series[query.key] = series.stored
                self._ids[query.key] = series.ids
            else:
                series = _Series(stored, self._ids[query.key])
                self._series.move_to_end(query.key)
            series.retain(query.retention)
            self._events -= series.trim(now)
            if event_id not in series:
                series.add(now, event_id, amount)
                self._events += 1
                while len(series) > self._max_per_key:
                    series.drop_oldest()
                    self._events -= 1
            results.append(self._totals(series, now, query, None))
        self._evict()
        return results

    async def peek_many(
        self, event_id: str, amount: int, now: float, queries: Sequence[VelocityQuery]
    ) -> list[tuple[VelocityTotals, ...]]:
        results = []
        for query in queries:
            series = _Series(self._series.get(query.key), self._ids.get(query.key))
            extra = None if event_id in series else amount
            results.append(self._totals(series, now, query, extra))
        return results

    @staticmethod
    def _totals(
        series: _Series, now: float, query: VelocityQuery, extra: int | None
    ) -> tuple[VelocityTotals, ...]:
        out = []
        for window in query.windows:
            count, amount = series.totals(now, window, extra)
            out.append(VelocityTotals(count, amount if query.sums else None))
        return tuple(out)

    def _evict(self) -> None:
        """Drop least recently used keys until both bounds hold again."""
        while len(self._series) > self._max_keys or self._events > self._max_events:
            key, stored = self._series.popitem(last=False)
            self._events -= len(_Series(stored, self._ids.pop(key)))


class SeenCards(ABC):
    """Which cards a tenant has seen, by the transaction that first showed each."""

    @abstractmethod
    async def first_seen(self, key: str, event_id: str, now: float) -> bool:
        """Record the card under ``key``; True if ``event_id`` is the first to show it.

        A replay of that first event is True again; any other event is False
        until the card goes unseen for the register's retention.

        Raises:
            StorageUnavailable: a shared backend cannot be reached.
        """

    @abstractmethod
    async def peek(self, key: str, event_id: str, now: float) -> bool:
        """What ``first_seen`` would answer, recording nothing."""

    async def aclose(self) -> None:  # noqa: B027 - in-process registers hold nothing to close
        """Release connections; the register is not used afterwards."""


class MemorySeenCards(SeenCards):
    """``SeenCards`` for one process: at most ``max_cards`` cards, those not seen
    for longest dropped first (a dropped card counts as first seen again: the
    cautious side).

    Cards live in two generations of plain dicts: the current one takes every
    card seen, and when it holds half the bound it becomes the previous one,
    whose cards move back to the current one when seen again and are dropped
    with it at the next turn. So a card is kept at least until ``max_cards / 2``
    other cards were seen after it.

    The dicts hold only strings and floats, which the cycle collector does not
    track: a full register (a million cards) costs a full collection nothing.
    An ``OrderedDict`` of tuples, the obvious exact LRU, is walked entry by
    entry on every full collection: about 50 ms with the event loop stopped.
    """

    def __init__(
        self, *, max_cards: int = DEFAULT_MAX_CARDS, retention: float = DEFAULT_SEEN_CARD_SECONDS
    ) -> None:
        if max_cards < 1 or retention <= 0:
            raise ValueError("max_cards must be at least 1 and retention positive")
        self._generation = max(1, max_cards // 2)
        # With a bound of one card, two generations of one would hold two.
        self._keep_previous = 2 * self._generation <= max_cards
        self._retention = retention
        #: card key -> the event that first showed it, and when it was last seen.
        self._first: dict[str, str] = {}
        self._seen_at: dict[str, float] = {}
        self._previous_first: dict[str, str] = {}
        self._previous_seen_at: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._first) + len(self._previous_first)

    def _first_event(self, key: str, now: float) -> str | None:
        first = self._first.get(key)
        seen_at = self._seen_at.get(key)
        if first is None:
            first = self._previous_first.get(key)
            seen_at = self._previous_seen_at.get(key)
        if first is None or seen_at is None or now - seen_at > self._retention:
            return None
        return first

    def _turn(self) -> None:
        """The current generation becomes the previous one; the previous one is dropped."""
        if self._keep_previous:
            self._previous_first, self._previous_seen_at = self._first, self._seen_at
        else:
            self._previous_first, self._previous_seen_at = {}, {}
        self._first, self._seen_at = {}, {}

    async def first_seen(self, key: str, event_id: str, now: float) -> bool:
        first = self._first_event(key, now) or event_id
        if key not in self._first:
            self._previous_first.pop(key, None)
            self._previous_seen_at.pop(key, None)
            if len(self._first) >= self._generation:
                self._turn()
        self._first[key] = first
        self._seen_at[key] = now
        return first == event_id

    async def peek(self, key: str, event_id: str, now: float) -> bool:
        first = self._first_event(key, now)
        return first is None or first == event_id
