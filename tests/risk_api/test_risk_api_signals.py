"""Processor-health signals from ingested events: the endpoint, the topic, risk and metrics."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from risk_api_support import evaluate, factor, transaction

from strongroom.api.app import publish_signals
from support import AUTH, event
from support_app import make_settings, serving


@pytest.fixture
async def fast_http(tmp_path: Path) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    settings = make_settings(
        tmp_path,
        ratelimit_rps=100_000.0,
        ratelimit_burst=100_000,
        processor_health_publish_seconds=0.1,
    )
    async with serving(settings) as pair:
        yield pair


async def ingest(http: httpx.AsyncClient, events: list[dict[str, Any]]) -> None:
    response = await http.post("/v1/events", json={"events": events}, headers=AUTH)
    assert response.status_code == 202, response.text


async def signals(http: httpx.AsyncClient, processor: str) -> list[dict[str, Any]]:
    response = await http.get(
        "/v1/signals/processors", params={"processor": processor}, headers=AUTH
    )
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def healthy(processor: str, merchant: str) -> dict[str, Any]:
    return event(
        processor=processor,
        merchant_id_hash=merchant,
        event_type="payment.succeeded",
        failure_category=None,
        retry_result=None,
        failure_origin=None,
        retry_count=0,
    )


async def test_a_failure_storm_raises_the_band_and_is_published(
    fast_http: tuple[Any, httpx.AsyncClient],
) -> None:
    app, http = fast_http
    processor = "proc_" + uuid.uuid4().hex[:8]
    merchant = "m_" + uuid.uuid4().hex
    await ingest(http, [healthy(processor, merchant) for _ in range(25)])
    before = await signals(http, processor)
    assert before[0]["band"] == "low"
    assert before[0]["merchant_id_hash"] is None
    assert before[1]["merchant_id_hash"] == merchant

    storm = [
        event(
            processor=processor,
            merchant_id_hash=merchant,
            failure_category="processor_timeout",
            event_type="payment.failed",
            retry_count=4,
        )
        for _ in range(100)
    ]
    for start in range(0, len(storm), 50):
        await ingest(http, storm[start : start + 50])
    after = (await signals(http, processor))[0]
    assert after["band"] in ("high", "critical"), after
    drivers = {d["name"] for d in after["drivers"]}
    assert {"high_failure_rate", "timeout_clustering", "retry_pressure_spike"} <= drivers

    # The band change reaches risk.signals (published every 0.1 s here).
    records: list[dict[str, Any]] = []
    for _ in range(50):
        page = await http.get("/v1/streams/risk.signals", params={"limit": 1000}, headers=AUTH)
        assert page.status_code == 200, page.text
        records = [
            r["record"] for r in page.json()["data"] if r["record"]["processor"] == processor
        ]
        if any(r["merchant_id_hash"] is None for r in records):
            break
        await asyncio.sleep(0.1)
    wide = [r for r in records if r["merchant_id_hash"] is None]
    assert wide, "no risk.signals record for the processor"
    assert wide[-1]["previous_band"] == "low"
    assert wide[-1]["band"] in ("high", "critical")
    assert "tenant" not in wide[-1]

    # Risk evaluations on that processor see the band.
    answer = await evaluate(http, transaction(processor=processor))
    assert factor(answer, "processor_health")["contribution"] > 0

    # Metrics name the processor, never a tenant.
    await publish_signals(app.state.gateway)
    metrics = (await http.get("/metrics")).text
    line = next(
        text
        for text in metrics.splitlines()
        if text.startswith("strongroom_processor_health_band{") and processor in text
    )
    assert line.endswith(" 2.0") or line.endswith(" 3.0")
    assert "tenant" not in line


async def test_too_few_events_stay_low(fast_http: tuple[Any, httpx.AsyncClient]) -> None:
    _, http = fast_http
    processor = "proc_" + uuid.uuid4().hex[:8]
    await ingest(http, [event(processor=processor) for _ in range(5)])
    found = (await signals(http, processor))[0]
    assert found["band"] == "low"
    assert found["sufficient"] is False
    assert found["drivers"] == []


async def test_another_tenants_signals_are_not_shown(
    fast_http: tuple[Any, httpx.AsyncClient],
) -> None:
    app, http = fast_http
    processor = "proc_" + uuid.uuid4().hex[:8]
    await ingest(http, [event(processor=processor) for _ in range(3)])
    state = app.state.gateway
    other = await state.tenants.create("other-" + uuid.uuid4().hex[:8])
    assert state.health.snapshot(other.id, state.clock.now()) == []
    assert await signals(http, processor)


async def test_only_events_stored_now_are_counted_never_their_duplicates(
    fast_http: tuple[Any, httpx.AsyncClient],
) -> None:
    _, http = fast_http
    processor = "proc_" + uuid.uuid4().hex[:8]
    first = [event(processor=processor) for _ in range(3)]
    await ingest(http, first)
    assert (await signals(http, processor))[0]["events"] == 3

    # Two resent, one repeated within the batch, one new: only the new one counts.
    new = event(processor=processor)
    await ingest(http, [first[0], new, first[1], new])
    assert (await signals(http, processor))[0]["events"] == 4

    # A batch that is new throughout counts every event.
    await ingest(http, [event(processor=processor) for _ in range(5)])
    assert (await signals(http, processor))[0]["events"] == 9
