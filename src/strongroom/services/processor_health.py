"""Processor-health signals from payment exhaust, after PayFlux's processor risk score.

Per tenant, per processor and per (processor, merchant), events are counted in
time buckets. Over the current window (default 5 minutes) six signals are
measured, each mapped to a component between 0 and 1, weighted, and summed
into a score of 0–100 that picks a band:

==================  =====================================  ===============  ======
signal              value                                  component = 1 at weight
==================  =====================================  ===============  ======
failure_rate        failed events / events                 0.50             30
timeout_share       timed-out events / events              0.25             20
retry_pressure      mean ``retry_count``                   3 retries        15
auth_failure_share  auth failures / events                 0.20             15
traffic_spike       event rate / baseline rate             4x baseline      10
geo_entropy_shift   geo entropy now - in baseline (bits)   +2 bits          10
==================  =====================================  ===============  ======

Bands: ``critical`` from 75, ``high`` from 50, ``elevated`` from 25, else
``low``. A signal whose component is at least 0.5 is a *driver*, named as
PayFlux names it (``high_failure_rate``, ``timeout_clustering``,
``retry_pressure_spike``, ``auth_failure_cluster``, ``traffic_volatility``,
``geo_entropy_increase``).

Where this departs from PayFlux, on purpose:

1. Time is passed in and buckets carry their start, so a quiet processor's
   old buckets expire instead of being counted again a window later.
2. The failure rate is scaled (50% failing is the full component): in PayFlux
   a processor failing every payment could not leave the elevated band.
3. Timeouts and auth failures are shares of all events, not of failures, so
   one timeout among one failure is not a "cluster".
4. Traffic spike and geo entropy compare with the previous hour (the
   baseline), and geo entropy is Shannon entropy rather than a count of
   distinct geos; neither is measured before the baseline has
   ``min_events`` events.
5. Fewer than ``min_events`` events in the window give ``low`` with no drivers
   and ``sufficient=False``.
6. Signals are per tenant: one tenant's traffic never moves another's bands.

Fields read from each ``PaymentEvent``: ``processor``, ``merchant_id_hash``,
``event_type``, ``failure_category``, ``failure_origin``, ``retry_count``,
``retry_result`` and ``geo_bucket``. An event is a failure when it has a
``failure_category``, when its ``event_type`` or ``retry_result`` says it
failed, was declined or errored; a timeout when its category, type or origin
mentions a timeout; an auth failure when its category mentions auth. The
event is placed at ``now`` (ingest time), not at the producer's timestamp.

Memory is bounded: at most ``max_series`` series (least recently updated
dropped first), each with at most (window + baseline) / bucket + 1 buckets,
each with at most ``max_geos_per_bucket`` distinct geos (the rest counted
together as ``other``), and at most ``MAX_PENDING`` events noted on the request
path but not yet counted (they are counted before any read of the signals).
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import repeat
from operator import attrgetter
from typing import Any, Final

from strongroom.domain.event_fast_path import IngestedEvent
from strongroom.domain.risk.bands import Band

SIGNALS_TOPIC: Final = "risk.signals"
OTHER_GEO: Final = "other"

#: (signal, driver name, weight, value at which the component is full)
_SPECS: Final = (
    ("failure_rate", "high_failure_rate", 30, 0.5),
    ("timeout_share", "timeout_clustering", 20, 0.25),
    ("retry_pressure", "retry_pressure_spike", 15, 3.0),
    ("auth_failure_share", "auth_failure_cluster", 15, 0.2),
    ("traffic_spike", "traffic_volatility", 10, 4.0),
    ("geo_entropy_shift", "geo_entropy_increase", 10, 2.0),
)
BAND_FLOORS: Final = ((75, Band.CRITICAL), (50, Band.HIGH), (25, Band.ELEVATED))
DRIVER_COMPONENT: Final = 0.5

_FAILED_WORDS: Final = ("fail", "declin", "error", "timeout", "timed_out")
_TIMEOUT_WORDS: Final = ("timeout", "timed_out", "time_out")
#: Every field an event's counts depend on, in one C-speed read per event.
_SIGNAL_FIELDS: Final = attrgetter(
    "processor",
    "merchant_id_hash",
    "failure_category",
    "event_type",
    "retry_result",
    "failure_origin",
    "retry_count",
    "geo_bucket",
)


@dataclass(frozen=True, slots=True)
class HealthConfig:
    """Windows and bounds of the monitor; the defaults are documented above."""

    window_seconds: int = 300
    baseline_seconds: int = 3600
    bucket_seconds: int = 30
    min_events: int = 20
    max_series: int = 5_000
    max_geos_per_bucket: int = 32
    #: How long ``band`` may answer from its last computation.
    refresh_seconds: float = 5.0

    def __post_init__(self) -> None:
        if self.bucket_seconds < 1 or self.window_seconds < self.bucket_seconds:
            raise ValueError("bucket_seconds must be at least 1 and at most window_seconds")
        if self.window_seconds % self.bucket_seconds or self.baseline_seconds % self.bucket_seconds:
            raise ValueError(
                "window_seconds and baseline_seconds must be multiples of bucket_seconds"
            )
        if self.min_events < 1 or self.max_series < 1 or self.max_geos_per_bucket < 1:
            raise ValueError("min_events, max_series and max_geos_per_bucket must be at least 1")


@dataclass(frozen=True, slots=True)
class Driver:
    """A signal that pushed the band up: its value, component and share of the score."""

    name: str
    signal: str
    value: float
    component: float
    contribution: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "signal": self.signal,
            "value": self.value,
            "component": self.component,
            "contribution": self.contribution,
        }


@dataclass(frozen=True, slots=True)
class ProcessorSignal:
    """The health of a processor (``merchant_id_hash`` None) or of one merchant on it."""

    tenant: str
    processor: str
    merchant_id_hash: str | None
    band: Band
    score: int
    events: int
    sufficient: bool
    signals: dict[str, float | None]
    drivers: tuple[Driver, ...]
    computed_at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "processor": self.processor,
            "merchant_id_hash": self.merchant_id_hash,
            "band": str(self.band),
            "score": self.score,
            "events": self.events,
            "sufficient": self.sufficient,
            "signals": dict(self.signals),
            "drivers": [driver.to_dict() for driver in self.drivers],
            "computed_at": self.computed_at,
        }


@dataclass(frozen=True, slots=True)
class BandChange:
    """A band that moved since it was last reported (published on ``risk.signals``)."""

    previous: Band
    signal: ProcessorSignal

    def to_dict(self) -> dict[str, Any]:
        return {**self.signal.to_dict(), "previous_band": str(self.previous)}


@dataclass(slots=True)
class _Bucket:
    index: int
    events: int = 0
    failures: int = 0
    timeouts: int = 0
    auth_failures: int = 0
    retries: int = 0
    geos: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True)
class _Series:
    buckets: deque[_Bucket] = field(default_factory=deque)
    reported: Band = Band.LOW
    cached: ProcessorSignal | None = None


def _mentions(value: str | None, words: tuple[str, ...]) -> bool:
    if not value:
        return False
    lowered = value.lower()
    return any(word in lowered for word in words)


@lru_cache(maxsize=4096)
def _outcome(
    failure_category: str | None,
    event_type: str,
    retry_result: str | None,
    failure_origin: str | None,
) -> tuple[int, int, int]:
    """(failed, timed out, auth failure) as 0 or 1, from an event's labels.

    Labels come from small vocabularies (a processor's failure categories, the
    event types), so the answers are cached rather than worked out per event.
    """
    timeout = any(
        _mentions(text, _TIMEOUT_WORDS) for text in (failure_category, event_type, failure_origin)
    )
    failed = (
        bool(failure_category)
        or _mentions(event_type, _FAILED_WORDS)
        or _mentions(retry_result, _FAILED_WORDS)
        or timeout
    )
    return int(failed), int(timeout), int(_mentions(failure_category, ("auth",)))


def _entropy(geos: Counter[str]) -> float:
    total = sum(geos.values())
    if total == 0:
        return 0.0
    return -sum(n / total * math.log2(n / total) for n in geos.values() if n)


def _clamp(value: float) -> float:
    return 0.0 if value < 0 else min(value, 1.0)


class ProcessorHealthMonitor:
    """Rolling processor-health signals, in memory, with time passed in."""

    #: Events noted but not yet counted; past this many they are counted at once.
    MAX_PENDING: Final = 10_000

    def __init__(self, config: HealthConfig | None = None) -> None:
        self.config = config or HealthConfig()
        self._series: OrderedDict[tuple[str, str, str | None], _Series] = OrderedDict()
        span = self.config.window_seconds + self.config.baseline_seconds
        self._kept_buckets = span // self.config.bucket_seconds + 1
        self._window_buckets = self.config.window_seconds // self.config.bucket_seconds
        #: Events observed since the last count, by ((tenant, bucket index), signal
        #: fields), in the order each combination first appeared.
        self._pending: Counter[tuple[tuple[str, int], tuple[Any, ...]]] = Counter()
        self._pending_events = 0

    def __len__(self) -> int:
        self._count_pending()
        return len(self._series)

    def observe(self, tenant: str, event: IngestedEvent, now: float) -> None:
        """Count one ingested event for its processor and, if it names one, its merchant."""
        self.observe_all(tenant, (event,), now)

    def observe_all(self, tenant: str, events: Sequence[IngestedEvent], now: float) -> None:
        """Count a request's events, as if one by one.

        On the request path an event is only noted, with its time bucket; the
        notes are counted before anything reads the counts (or once
        ``MAX_PENDING`` are waiting). Counting them together is what makes it
        cheap: the events since the last read usually repeat a few combinations
        of signal fields, and each combination's labels are read, and its
        buckets found, once. Noting is done in C: ``Counter.update`` over pairs
        zipped from the fields ``attrgetter`` reads, with no Python code per
        event (about half the time of a tuple per event, for a batch of 100).
        """
        index = int(now // self.config.bucket_seconds)
        self._pending.update(zip(repeat((tenant, index)), map(_SIGNAL_FIELDS, events)))
        self._pending_events += len(events)
        if self._pending_events >= self.MAX_PENDING:
            self._count_pending()

    def _count_pending(self) -> None:
        """Count the noted events. Equal notes are counted together, in the order
        each first appears, so the first geos of a bucket take its slots in event order."""
        if not self._pending:
            return
        pending, self._pending, self._pending_events = self._pending, Counter(), 0
        found: dict[tuple[str, str, str | None, int], _Bucket | None] = {}
        for ((tenant, index), signal), count in pending.items():
            processor, merchant, category, event_type, retry_result, origin, retry, geo = signal
            failed, timeout, auth = _outcome(category, event_type, retry_result, origin)
            keys: list[tuple[str, str, str | None]] = [(tenant, processor, None)]
            if merchant is not None:
                keys.append((tenant, processor, merchant))
            for key in keys:
                at = (*key, index)
                if at in found:
                    bucket = found[at]
                else:
                    bucket = found[at] = self._bucket(key, index)
                if bucket is None:
                    continue
                bucket.events += count
                bucket.failures += failed * count
                bucket.timeouts += timeout * count
                bucket.auth_failures += auth * count
                bucket.retries += retry * count
                if geo is not None:
                    full = len(bucket.geos) >= self.config.max_geos_per_bucket
                    bucket.geos[OTHER_GEO if full and geo not in bucket.geos else geo] += count
        while len(self._series) > self.config.max_series:
            self._series.popitem(last=False)

    def _bucket(self, key: tuple[str, str, str | None], index: int) -> _Bucket | None:
        """The bucket of ``index`` in the series of ``key``; None if it expired already."""
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series()
        else:
            self._series.move_to_end(key)
        buckets = series.buckets
        while buckets and buckets[0].index <= index - self._kept_buckets:
            buckets.popleft()
        if not buckets or buckets[-1].index < index:
            buckets.append(_Bucket(index))
            return buckets[-1]
        if index <= buckets[-1].index - self._kept_buckets:
            return None  # Too late: its bucket has expired.
        position = len(buckets)
        while position > 0 and buckets[position - 1].index > index:
            position -= 1
        if position > 0 and buckets[position - 1].index == index:
            return buckets[position - 1]
        late = _Bucket(index)
        buckets.insert(position, late)
        return late

    def _compute(
        self, key: tuple[str, str, str | None], series: _Series, now: float
    ) -> ProcessorSignal:
        config = self.config
        index = int(now // config.bucket_seconds)
        window_from = index - self._window_buckets
        baseline_from = window_from - config.baseline_seconds // config.bucket_seconds
        now_b = _Bucket(index)
        base_b = _Bucket(index)
        first_baseline: int | None = None
        for bucket in series.buckets:
            if bucket.index > index or bucket.index <= baseline_from:
                continue
            if bucket.index > window_from:
                target = now_b
            else:
                target = base_b
                first_baseline = bucket.index if first_baseline is None else first_baseline
            target.events += bucket.events
            target.failures += bucket.failures
            target.timeouts += bucket.timeouts
            target.auth_failures += bucket.auth_failures
            target.retries += bucket.retries
            target.geos.update(bucket.geos)
        tenant, processor, merchant = key
        values: dict[str, float | None] = dict.fromkeys(spec[0] for spec in _SPECS)
        sufficient = now_b.events >= config.min_events
        drivers: list[Driver] = []
        score = 0.0
        if sufficient:
            events = now_b.events
            values["failure_rate"] = now_b.failures / events
            values["timeout_share"] = now_b.timeouts / events
            values["retry_pressure"] = now_b.retries / events
            values["auth_failure_share"] = now_b.auth_failures / events
            if base_b.events >= config.min_events and first_baseline is not None:
                span = (window_from - first_baseline + 1) * config.bucket_seconds
                base_rate = base_b.events / span
                values["traffic_spike"] = (events / config.window_seconds) / base_rate
                values["geo_entropy_shift"] = _entropy(now_b.geos) - _entropy(base_b.geos)
            for signal, driver, weight, full in _SPECS:
                value = values[signal]
                if value is None:
                    continue
                if signal == "traffic_spike":
                    component = _clamp((value - 1.0) / (full - 1.0))
                else:
                    component = _clamp(value / full)
                contribution = weight * component
                score += contribution
                if component >= DRIVER_COMPONENT:
                    drivers.append(
                        Driver(
                            driver,
                            signal,
                            round(value, 4),
                            round(component, 4),
                            round(contribution, 2),
                        )
                    )
        drivers.sort(key=lambda d: (-d.contribution, d.name))
        total = min(100, round(score))
        band = next((band for floor, band in BAND_FLOORS if total >= floor), Band.LOW)
        return ProcessorSignal(
            tenant=tenant,
            processor=processor,
            merchant_id_hash=merchant,
            band=band,
            score=total,
            events=now_b.events,
            sufficient=sufficient,
            signals={k: None if v is None else round(v, 4) for k, v in values.items()},
            drivers=tuple(drivers),
            computed_at=now,
        )

    def signal(self, tenant: str, processor: str, now: float) -> ProcessorSignal | None:
        """The processor-wide signal, recomputed at most every ``refresh_seconds``."""
        self._count_pending()
        key = (tenant, processor, None)
        series = self._series.get(key)
        if series is None:
            return None
        cached = series.cached
        if cached is None or not 0 <= now - cached.computed_at < self.config.refresh_seconds:
            cached = series.cached = self._compute(key, series, now)
        return cached

    def band(self, tenant: str, processor: str, now: float) -> Band | None:
        """The processor's band for risk evaluation, or None if it has no events."""
        found = self.signal(tenant, processor, now)
        return None if found is None else found.band

    def snapshot(self, tenant: str, now: float) -> list[ProcessorSignal]:
        """Every signal of ``tenant``: processors first, then their merchants."""
        self._count_pending()
        keys = sorted(
            (key for key in self._series if key[0] == tenant),
            key=lambda k: (k[1], k[2] is not None, k[2] or ""),
        )
        return [self._compute(key, self._series[key], now) for key in keys]

    def band_changes(self, now: float) -> list[BandChange]:
        """Bands that moved since the last call, across tenants; each is reported once."""
        self._count_pending()
        changes = []
        for key, series in self._series.items():
            current = self._compute(key, series, now)
            if current.band is not series.reported:
                changes.append(BandChange(series.reported, current))
                series.reported = current.band
        return changes
