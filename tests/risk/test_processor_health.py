"""Processor-health bands on synthetic traffic: healthy, storms, recovery."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from risk_support import T0, event

from strongroom.domain.risk import Band
from strongroom.services.processor_health import HealthConfig, ProcessorHealthMonitor

TENANT = "ten_a"


def healthy_hour(monitor: ProcessorHealthMonitor, processor: str, start: float) -> float:
    """An hour of calm traffic: 6 events a minute, one failure in 50, one geo."""
    for n in range(360):
        failed = n % 50 == 0
        monitor.observe(
            TENANT,
            event(
                processor,
                event_type="payment_failed" if failed else "payment_succeeded",
                failure_category="card_declined" if failed else None,
            ),
            start + n * 10,
        )
    return start + 3600


def test_healthy_traffic_stays_low() -> None:
    monitor = ProcessorHealthMonitor()
    now = healthy_hour(monitor, "acme", T0)
    for n in range(30):
        monitor.observe(TENANT, event("acme", geo="DE"), now + n * 10)
    signal = monitor.signal(TENANT, "acme", now + 300)
    assert signal is not None
    assert (signal.band, signal.drivers, signal.sufficient) == (Band.LOW, (), True)
    assert signal.score < 25
    assert monitor.band(TENANT, "acme", now + 300) is Band.LOW


def test_a_timeout_storm_raises_the_band_and_names_timeouts() -> None:
    monitor = ProcessorHealthMonitor()
    now = healthy_hour(monitor, "acme", T0)
    healthy_hour(monitor, "calm", T0)
    for n in range(300):
        monitor.observe(
            TENANT,
            event(
                "acme",
                event_type="payment_failed",
                failure_category="processor_timeout",
                retry_count=2,
            ),
            now + n,
        )
        monitor.observe(TENANT, event("calm"), now + n)
    storm = monitor.signal(TENANT, "acme", now + 300)
    assert storm is not None
    assert storm.band in (Band.HIGH, Band.CRITICAL)
    names = [driver.name for driver in storm.drivers]
    assert "timeout_clustering" in names
    assert "high_failure_rate" in names
    timeout = next(d for d in storm.drivers if d.name == "timeout_clustering")
    assert (timeout.signal, timeout.value, timeout.component) == ("timeout_share", 1.0, 1.0)
    assert storm.signals["failure_rate"] == 1.0
    # The other processor, seeing the same volume of healthy traffic, stays low.
    assert monitor.band(TENANT, "calm", now + 300) is Band.LOW


def test_a_timeout_storm_alone_is_high_and_with_retries_and_a_spike_critical() -> None:
    monitor = ProcessorHealthMonitor()
    now = healthy_hour(monitor, "acme", T0)
    for n in range(30):
        monitor.observe(TENANT, event("acme", failure_category="gateway_timeout"), now + n * 10)
    alone = monitor.signal(TENANT, "acme", now + 299)
    assert alone is not None
    # 30 events in 5 minutes is the baseline rate: no spike and no retries, but every
    # payment timed out: failure rate (30) and timeout share (20) make it high.
    assert (alone.band, alone.score) == (Band.HIGH, 50)
    monitor2 = ProcessorHealthMonitor()
    now = healthy_hour(monitor2, "acme", T0)
    for n in range(400):
        monitor2.observe(
            TENANT, event("acme", failure_category="gateway_timeout", retry_count=4), now + n / 2
        )
    worst = monitor2.signal(TENANT, "acme", now + 299)
    assert worst is not None
    assert worst.band is Band.CRITICAL
    assert {d.name for d in worst.drivers} >= {
        "timeout_clustering",
        "high_failure_rate",
        "retry_pressure_spike",
        "traffic_volatility",
    }


def test_auth_failures_and_geo_spread_are_drivers() -> None:
    monitor = ProcessorHealthMonitor()
    now = healthy_hour(monitor, "acme", T0)
    geos = [f"G{n}" for n in range(16)]
    for n in range(64):
        monitor.observe(
            TENANT,
            event("acme", failure_category="authentication_failed", geo=geos[n % 16]),
            now + n * 4,
        )
    signal = monitor.signal(TENANT, "acme", now + 299)
    assert signal is not None
    names = {d.name for d in signal.drivers}
    assert {"auth_failure_cluster", "geo_entropy_increase", "high_failure_rate"} <= names
    assert signal.signals["geo_entropy_shift"] == pytest.approx(4.0)


def test_band_changes_are_reported_once_and_on_recovery() -> None:
    monitor = ProcessorHealthMonitor()
    now = healthy_hour(monitor, "acme", T0)
    assert monitor.band_changes(now) == []
    for n in range(100):
        monitor.observe(TENANT, event("acme", failure_category="processor_timeout"), now + n)
    (change, merchant_change) = monitor.band_changes(now + 100)
    assert (change.previous, change.signal.band) == (Band.LOW, Band.HIGH)
    assert change.signal.merchant_id_hash is None
    assert merchant_change.signal.merchant_id_hash == "m_1"
    body = change.to_dict()
    assert (body["previous_band"], body["band"], body["processor"]) == ("low", "high", "acme")
    assert "timeout_clustering" in [d["name"] for d in body["drivers"]]
    assert monitor.band_changes(now + 101) == []
    # The storm passes: healthy traffic for the next window brings the band back.
    for n in range(100):
        monitor.observe(TENANT, event("acme"), now + 400 + n * 3)
    recovered = monitor.band_changes(now + 700)
    assert [(c.previous, c.signal.band) for c in recovered] == [(Band.HIGH, Band.LOW)] * 2


def test_too_few_events_say_so() -> None:
    monitor = ProcessorHealthMonitor()
    for n in range(5):
        monitor.observe(TENANT, event("acme", failure_category="processor_timeout"), T0 + n)
    signal = monitor.signal(TENANT, "acme", T0 + 10)
    assert signal is not None
    assert (signal.band, signal.sufficient, signal.drivers, signal.events) == (
        Band.LOW,
        False,
        (),
        5,
    )
    assert monitor.band(TENANT, "unknown", T0) is None


def test_signals_are_per_tenant_and_per_merchant() -> None:
    monitor = ProcessorHealthMonitor()
    for n in range(40):
        monitor.observe(TENANT, event("acme", merchant=f"m_{n % 2}"), T0 + n)
        monitor.observe("ten_b", event("other", merchant=None), T0 + n)
    snapshot = monitor.snapshot(TENANT, T0 + 40)
    assert [(s.processor, s.merchant_id_hash, s.events) for s in snapshot] == [
        ("acme", None, 40),
        ("acme", "m_0", 20),
        ("acme", "m_1", 20),
    ]
    assert [s.processor for s in monitor.snapshot("ten_b", T0 + 40)] == ["other"]
    assert monitor.band("ten_b", "acme", T0 + 40) is None
    assert snapshot[0].to_dict()["band"] == "low"


def _buckets(monitor: ProcessorHealthMonitor, processor: str) -> Any:
    """A processor's buckets, after a read has counted every event noted so far."""
    assert len(monitor)
    return monitor._series[(TENANT, processor, None)].buckets


def test_memory_is_bounded_and_old_buckets_expire() -> None:
    config = HealthConfig(max_series=10, max_geos_per_bucket=3)
    monitor = ProcessorHealthMonitor(config)
    for n in range(200):
        monitor.observe(TENANT, event(f"p{n}", merchant=None, geo=f"G{n}"), T0 + n)
    assert len(monitor) == 10
    for n in range(10):
        monitor.observe(TENANT, event("p199", merchant=None, geo=f"G{n}"), T0 + 200)
    buckets = _buckets(monitor, "p199")
    # G199 (same bucket), G0 and G1 fill the three places; the other 8 share one.
    assert len(buckets[-1].geos) == 4
    assert buckets[-1].geos["other"] == 8
    # Far later, the old buckets are gone.
    monitor.observe(TENANT, event("p199", merchant=None), T0 + 100_000)
    assert len(_buckets(monitor, "p199")) == 1
    # A late event whose bucket expired is dropped; one within the horizon is kept.
    monitor.observe(TENANT, event("p199", merchant=None), T0 + 100)
    monitor.observe(TENANT, event("p199", merchant=None), T0 + 99_000)
    assert [b.events for b in _buckets(monitor, "p199")] == [1, 1]


def test_band_is_cached_for_the_refresh_interval() -> None:
    monitor = ProcessorHealthMonitor(HealthConfig(refresh_seconds=5))
    for n in range(30):
        monitor.observe(TENANT, event("acme"), T0 + n)
    assert monitor.band(TENANT, "acme", T0 + 30) is Band.LOW
    for _ in range(60):
        monitor.observe(TENANT, event("acme", failure_category="timeout"), T0 + 30)
    assert monitor.band(TENANT, "acme", T0 + 31) is Band.LOW
    assert monitor.band(TENANT, "acme", T0 + 36) is not Band.LOW


def test_configuration_is_checked() -> None:
    with pytest.raises(ValueError, match="multiples"):
        HealthConfig(window_seconds=300, bucket_seconds=7)
    with pytest.raises(ValueError, match="at least 1"):
        HealthConfig(min_events=0)


def test_a_batch_counts_as_its_events_one_by_one() -> None:
    one_by_one, batched = ProcessorHealthMonitor(), ProcessorHealthMonitor()
    kinds = [
        {"event_type": "payment_failed", "failure_category": "processor_timeout", "retry_count": 2},
        {"event_type": "payment_failed", "failure_category": "auth_failed", "geo": "FR"},
        {"event_type": "payment_succeeded", "retry_result": "declined", "merchant": None},
        {"event_type": "payment_succeeded", "failure_origin": "issuer_timed_out", "geo": None},
        {"event_type": "payment_succeeded", "merchant": "m_2", "geo": "US"},
    ]
    now = T0
    for second in range(120):
        batch = [event("acme", **kinds[(second + n) % len(kinds)]) for n in range(7)]
        batch.append(event("other", geo=f"g{second % 13}"))
        for one in batch:
            one_by_one.observe(TENANT, one, now + second)
            assert len(one_by_one)  # a read: each event is counted before the next
        batched.observe_all(TENANT, batch, now + second)

    later = now + 120
    assert batched.snapshot(TENANT, later) == one_by_one.snapshot(TENANT, later)
    assert batched.band(TENANT, "acme", later) is not Band.LOW


#: Two geo slots a bucket, so which geos take them depends on the order events
#: arrive; short windows, so that a few batches make both a window and its baseline.
SMALL = HealthConfig(
    window_seconds=60, baseline_seconds=120, bucket_seconds=30, max_geos_per_bucket=2, min_events=1
)
_LABELS = st.sampled_from(["payment_failed", "payment_succeeded", "auth_error", "gateway_timeout"])


@given(
    batches=st.lists(
        st.lists(
            st.fixed_dictionaries(
                {
                    "processor": st.sampled_from(["acme", "other"]),
                    "merchant": st.sampled_from([None, "m_1", "m_2"]),
                    "event_type": _LABELS,
                    "failure_category": st.none() | _LABELS,
                    "failure_origin": st.none() | _LABELS,
                    "retry_count": st.integers(0, 3),
                    "retry_result": st.none() | _LABELS,
                    "geo": st.none() | st.sampled_from(["DE", "FR", "US", "BR", "JP"]),
                }
            ),
            min_size=1,
            max_size=20,
        ),
        min_size=2,
        max_size=8,
    ),
    seconds_apart=st.integers(0, 60),
)
def test_any_batch_counts_as_its_events_one_by_one(
    batches: list[list[dict[str, Any]]], seconds_apart: int
) -> None:
    one_by_one, batched = ProcessorHealthMonitor(SMALL), ProcessorHealthMonitor(SMALL)
    for number, fields in enumerate(batches):
        now = T0 + number * seconds_apart
        events = [event(**kind) for kind in fields]
        for one in events:
            one_by_one.observe(TENANT, one, now)
            assert len(one_by_one)  # a read: each event is counted before the next
        batched.observe_all(TENANT, events, now)
    later = T0 + len(batches) * seconds_apart
    assert batched.snapshot(TENANT, later) == one_by_one.snapshot(TENANT, later)


def test_a_processors_full_geo_slots_leave_its_merchants_own_slots_free() -> None:
    monitor = ProcessorHealthMonitor(SMALL)
    monitor.observe_all(TENANT, [event("acme", merchant="m_1", geo="DE")], T0)
    window = [("m_2", "FR"), ("m_2", "ES"), ("m_1", "US"), ("m_1", "JP")]
    monitor.observe_all(TENANT, [event("acme", merchant=m, geo=g) for m, g in window], T0 + 90)

    processor, m_1, _ = monitor.snapshot(TENANT, T0 + 100)
    # The processor counts US and JP as "other" (its two slots went to FR and ES):
    # FR, ES, other, other is 1.5 bits; its baseline was DE alone, 0 bits.
    assert processor.signals["geo_entropy_shift"] == pytest.approx(1.5)
    # m_1 had room for both: US, JP is 1 bit against DE's 0.
    assert m_1.merchant_id_hash == "m_1"
    assert m_1.signals["geo_entropy_shift"] == pytest.approx(1.0)


def test_events_noted_without_a_read_are_counted_once_enough_are_waiting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ProcessorHealthMonitor, "MAX_PENDING", 50)
    monitor = ProcessorHealthMonitor(HealthConfig(min_events=1))
    for n in range(120):
        monitor.observe(TENANT, event("acme", geo=f"G{n % 7}"), T0 + n / 10)
        # Memory stays bounded however long nothing reads the signals.
        assert len(monitor._pending) < 50
    (processor, merchant) = monitor.snapshot(TENANT, T0 + 12)
    assert processor.events == merchant.events == 120
