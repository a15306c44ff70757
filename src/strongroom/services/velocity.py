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


class _Series:
    """One key's events, oldest first: times, id hashes and running amount sums.

    Totals over a window are two binary searches and a subtraction, not a walk
    over the window's events: a hot key (one merchant, one card under attack)
    holds thousands of events, and every evaluation asks for its totals.
    Dropped events advance ``start``; the arrays are compacted once more than
    half of them is dropped, so a drop costs O(1) amortized.

    Held so that Python's cycle collector has little to walk: a full
    collection stops the event loop for as long as it takes to visit every
    tracked object and every element of every list, set and tracked dict, and
    a counter under load holds hundreds of thousands of events. Times, id
    hashes and sums are arrays: each is one tracked object, with no elements
    to visit. ``ids`` is a plain dict of ints to strings, which CPython does
    not track at all. With lists and a set, each such pause grew to tens of
    milliseconds, about once a second at 1,000 evaluations/s. What is left is
    four tracked objects a key: a full collection over 100,000 keys still
    takes about 35 ms on the reference machine. Packing each key into
    bytearrays read through memoryviews (nothing tracked a key) cut that to
    8 ms, but made an in-process evaluation about 30 µs (a fifth) dearer:
    a cost on every request, against a pause that comes once in many seconds.

    Running sums are kept modulo 2^64 (an int64 could overflow), so a window's
    amount, the difference of two of them, is exact while the true total is
    below 2^64: always when its events times the largest amount seen stay
    below that, and otherwise it is summed event by event (each amount is the
    difference of two neighbouring sums).

    ``ids`` maps ``hash(event_id)`` to the event id. Two ids with the same hash
    (about one chance in 2^64 a pair; ``str`` hashes are keyed per process) are
    both counted: an event is taken for a replay only when its own id is found.
    """

    __slots__ = ("hashes", "ids", "largest", "retention", "start", "sums", "times")

    def __init__(self) -> None:
        self.times = array("d")
        self.hashes = array("q")
        #: ``sums[i]``: the amounts of every event up to ``i``, dropped ones
        #: included, modulo 2^64.
        self.sums = array("q")
        self.largest = 0
        self.start = 0
        self.ids: dict[int, str] = {}
        self.retention = 0

    def __len__(self) -> int:
        return len(self.times) - self.start

    def __contains__(self, event_id: str) -> bool:
        return self.ids.get(hash(event_id)) == event_id

    def _sum_before(self, index: int) -> int:
        return self.sums[index - 1] if index else 0

    def _drop_to(self, index: int) -> int:
        """Drop the events before ``index``; how many were dropped."""
        dropped = index - self.start
        ids = self.ids
        for hashed in self.hashes[self.start : index]:
            ids.pop(hashed, None)
        self.start = index
        if self.start > COMPACT_AFTER and 2 * self.start > len(self.times):
            base = self._sum_before(self.start)
            self.times = self.times[self.start :]
            self.hashes = self.hashes[self.start :]
            self.sums = array("q", [_wrapped(total - base) for total in self.sums[self.start :]])
            self.start = 0
        return dropped

    def drop_oldest(self) -> None:
        self._drop_to(self.start + 1)

    def trim(self, now: float) -> int:
        """Drop events past the retention; how many were dropped."""
        return self._drop_to(bisect_right(self.times, now - self.retention, self.start))

    def add(self, at: float, event_id: str, amount: int) -> None:
        if not 0 <= amount <= _INT64_MAX:
            raise ValueError("a velocity amount must be between 0 and 2^63 - 1")
        hashed = hash(event_id)
        self.ids.setdefault(hashed, event_id)
        self.largest = max(self.largest, amount)
        if not len(self) or self.times[-1] <= at:
            self.times.append(at)
            self.hashes.append(hashed)
            self.sums.append(_wrapped(self._sum_before(len(self.sums)) + amount))
            return
        # Out of order (another clock, a late retry): keep the events sorted;
        # the sums after it all grow by its amount. Rare, so O(n) is fine.
        index = bisect_right(self.times, at, self.start)
        self.times.insert(index, at)
        self.hashes.insert(index, hashed)
        self.sums.insert(index, _wrapped(self._sum_before(index) + amount))
        for later in range(index + 1, len(self.sums)):
            self.sums[later] = _wrapped(self.sums[later] + amount)

    def _amount_from(self, first: int) -> int:
        """The exact total of the events from ``first`` on."""
        events = len(self.times) - first
        if events * self.largest < _MODULUS:
            return (self.sums[-1] - self._sum_before(first)) & _MASK64
        sums = self.sums
        previous = self._sum_before(first)
        total = 0
        for index in range(first, len(sums)):
            total += (sums[index] - previous) & _MASK64
            previous = sums[index]
        return total

    def totals(self, now: float, window: int, extra: int | None) -> tuple[int, int]:
        """Count and amount above ``now - window``, plus an unrecorded ``extra`` event."""
        count, amount = (1, extra) if extra is not None else (0, 0)
        if not len(self):
            return count, amount
        first = bisect_right(self.times, now - window, self.start)
        return count + len(self.times) - first, amount + self._amount_from(first)


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
        self._series: OrderedDict[str, _Series] = OrderedDict()
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
            series = self._series.get(query.key)
            if series is None:
                series = self._series[query.key] = _Series()
            else:
                self._series.move_to_end(query.key)
            series.retention = max(series.retention, query.retention)
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
            series = self._series.get(query.key)
            if series is None:
                series = _Series()
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
            _, series = self._series.popitem(last=False)
            self._events -= len(series)


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
        first = self._first_event(key, now)
        if first is None:
            first = event_id
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
