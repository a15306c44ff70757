"""Prometheus metrics. Labels carry routes, reasons and topics, never keys or identifiers."""

from __future__ import annotations

import gc

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)


class Metrics:
    """Every metric the gateway exports, registered in one registry per app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        # Collections per generation: a rising generation-2 rate is a latency tail.
        GCCollector(registry=self.registry)
        r = self.registry
        self.gc_frozen_objects = Gauge(
            "strongroom_gc_frozen_objects",
            "Objects set aside at start-up that the cycle collector no longer scans.",
            registry=r,
        )
        self.gc_frozen_objects.set_function(gc.get_freeze_count)
        self.kms_credential_expires_in = Gauge(
            "strongroom_kms_credential_expires_in_seconds",
            "Seconds until the key manager's credential (the Vault token) expires; "
            "-1 when it never expires or its lifetime is unknown.",
            registry=r,
        )
        self.kms_credential_expires_in.set(-1)
        self.events_accepted = Counter(
            "strongroom_ingest_events_accepted", "Events newly committed to the log.", registry=r
        )
        self.events_duplicate = Counter(
            "strongroom_ingest_events_duplicate",
            "Events answered as duplicates of an earlier event_id.",
            registry=r,
        )
        self.events_rejected = Counter(
            "strongroom_ingest_events_rejected",
            "Ingest requests refused, by reason.",
            ["reason"],
            registry=r,
        )
        self.request_duration = Histogram(
            "strongroom_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template and method.",
            ["route", "method"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.requests = Counter(
            "strongroom_http_requests",
            "HTTP requests answered, by route template, method and status code.",
            ["route", "method", "status"],
            registry=r,
        )
        self.auth_denied = Counter(
            "strongroom_auth_denied", "Requests refused authentication, by reason.", ["reason"],
            registry=r,
        )  # fmt: skip
        self.rate_limited = Counter(
            "strongroom_rate_limited",
            "Requests refused by a rate limit, by limit kind (key or ip).",
            ["kind"],
            registry=r,
        )
        self.ratelimit_fallback = Counter(
            "strongroom_ratelimit_fallback",
            "Rate-limit checks answered in process because the shared Redis did not answer.",
            registry=r,
        )
        self.log_length = Gauge(
            "strongroom_stream_log_length", "Records in a topic of the event log.", ["topic"],
            registry=r,
        )  # fmt: skip
        # Summed over tenants: a label per tenant would grow without bound.
        self.consumer_lag = Gauge(
            "strongroom_consumer_lag_records",
            "Records not yet delivered to a consumer group.", ["topic", "group"],
            registry=r,
        )  # fmt: skip
        self.consumer_pending = Gauge(
            "strongroom_consumer_pending_records",
            "Records delivered to a consumer group and not acknowledged yet.", ["topic", "group"],
            registry=r,
        )  # fmt: skip
        self.dead_letters = Gauge(
            "strongroom_dead_letters",
            "Dead letters of a consumer group not replayed yet.", ["topic", "group"],
            registry=r,
        )  # fmt: skip
        self.writer_queue = Gauge(
            "strongroom_log_writer_queued_events",
            "Events waiting for the log writer's next commit.",
            registry=r,
        )
        self.backpressure = Counter(
            "strongroom_backpressure_rejections",
            "Writes refused with 503 because the log writer was past its queue bound.",
            registry=r,
        )
        self.risk_decisions = Counter(
            "strongroom_risk_decisions",
            "Risk decisions made (replays not counted), by decision.",
            ["decision"],
            registry=r,
        )
        self.processor_health_score = Gauge(
            "strongroom_processor_health_score",
            "Processor-health score 0-100, by processor (the worst across tenants).",
            ["processor"],
            registry=r,
        )
        self.processor_health_band = Gauge(
            "strongroom_processor_health_band",
            "Processor-health band by processor: 0 low, 1 elevated, 2 high, 3 critical.",
            ["processor"],
            registry=r,
        )
        self.risk_signals_published = Counter(
            "strongroom_risk_signals_published",
            "Processor-health band changes published on risk.signals.",
            registry=r,
        )
