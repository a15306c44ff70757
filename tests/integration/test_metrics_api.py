"""``/metrics``: what it exposes, how counters move, and what labels never hold.

1. The ingest, HTTP, auth, rate-limit and stream metrics and the process_* metrics
   are exposed in the Prometheus text format.
2. Counters move by exactly the number of events or requests concerned.
3. Request metrics are labelled by route template, never by a concrete path.
4. No label value is an event id, a merchant or intent hash, or an API key.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from integration_support import metric_samples, metric_value, stored_ids

from support import AUTH, JSON_HEADERS, KEY, OTHER_KEY, TOKENIZED_URL, card_free_event
from support_app import peer

ACCEPTED = "strongroom_ingest_events_accepted_total"
DUPLICATE = "strongroom_ingest_events_duplicate_total"
REJECTED = "strongroom_ingest_events_rejected_total"
DURATION = "strongroom_http_request_duration_seconds"
MIB = 1024 * 1024


async def post(client: httpx.AsyncClient, body: object) -> httpx.Response:
    return await client.post("/v1/events", content=json.dumps(body), headers=JSON_HEADERS)


async def _chunks(raw: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(raw), size):
        yield raw[start : start + size]


async def test_metrics_are_prometheus_text_with_every_family(client: httpx.AsyncClient) -> None:
    response = await client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for family, kind in [
        ("strongroom_ingest_events_accepted_total", "counter"),
        ("strongroom_ingest_events_rejected_total", "counter"),
        ("strongroom_ingest_events_duplicate_total", "counter"),
        ("strongroom_http_request_duration_seconds", "histogram"),
        ("strongroom_auth_denied_total", "counter"),
        ("strongroom_rate_limited_total", "counter"),
        ("strongroom_stream_log_length", "gauge"),
    ]:
        assert f"# TYPE {family} {kind}" in text, family
    names = {name for name, _, _ in await metric_samples(client)}
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes"} <= names
    assert {"python_gc_collections_total", "strongroom_gc_frozen_objects"} <= names
    assert any(name.startswith("python_info") for name in names)


async def test_a_fresh_gateway_counts_from_zero(client: httpx.AsyncClient) -> None:
    assert await metric_value(client, ACCEPTED) == 0
    assert await metric_value(client, DUPLICATE) == 0
    assert await metric_value(client, "strongroom_stream_log_length") == 0


async def test_accepted_and_duplicate_counters_move_by_event_counts(
    client: httpx.AsyncClient,
) -> None:
    first = [card_free_event() for _ in range(5)]
    await post(client, {"events": first})
    assert await metric_value(client, ACCEPTED) == 5
    assert await metric_value(client, DUPLICATE) == 0

    await post(client, {"events": [first[0], first[1], card_free_event()]})
    assert await metric_value(client, ACCEPTED) == 6
    assert await metric_value(client, DUPLICATE) == 2

    await post(client, first[4])
    assert await metric_value(client, ACCEPTED) == 6
    assert await metric_value(client, DUPLICATE) == 3


async def test_a_refused_batch_moves_only_the_rejected_counter(client: httpx.AsyncClient) -> None:
    events = [card_free_event() for _ in range(5)]
    events[2]["retry_count"] = -1

    await post(client, {"events": events})

    assert await metric_value(client, ACCEPTED) == 0
    assert await metric_value(client, DUPLICATE) == 0
    assert await metric_value(client, REJECTED, reason="validation_failed") == 1
    assert await metric_value(client, REJECTED) == 1


async def test_rejections_are_counted_by_reason(serve: Any) -> None:
    async with serve(max_event_bytes=256) as app, peer(app) as http:
        await post(http, {"events": []})
        await post(http, card_free_event(retry_count="1"))
        await post(http, card_free_event(metadata={"note": "4111 1111 1111 1111"}))
        await post(http, card_free_event(metadata={"cvv": "123"}))
        await post(http, card_free_event(metadata={"cvv": "123"}))
        await http.post("/v1/events", content="{}", headers={**AUTH, "Content-Type": "text/xml"})
        await post(http, card_free_event(metadata={"note": "n" * 200}))
        await http.post("/v1/events", content=_chunks(b" " * (MIB + 1)), headers=JSON_HEADERS)

        counted = {
            labels["reason"]: value
            for name, labels, value in await metric_samples(http)
            if name == REJECTED
        }

    assert counted == {
        "validation_failed": 2,
        "pan_detected": 1,
        "sensitive_authentication_data": 2,
        "unsupported_media_type": 1,
        "payload_too_large": 2,
    }


async def _request_counts(client: httpx.AsyncClient) -> dict[tuple[str, str], float]:
    return {
        (labels["route"], labels["method"]): value
        for name, labels, value in await metric_samples(client)
        if name == f"{DURATION}_count"
    }


async def test_ingest_requests_are_timed_under_their_route_template(
    client: httpx.AsyncClient,
) -> None:
    for _ in range(3):
        await post(client, card_free_event())
    await client.post(
        "/v1/events/payment_exhaust", content=json.dumps(card_free_event()), headers=JSON_HEADERS
    )

    counts = await _request_counts(client)

    assert counts.get(("/v1/events", "POST")) == 3, counts
    assert counts.get(("/v1/events/payment_exhaust", "POST")) == 1, counts
    buckets = [
        labels["le"]
        for name, labels, _ in await metric_samples(client)
        if name == f"{DURATION}_bucket" and labels["route"] == "/v1/events"
    ]
    assert "+Inf" in buckets
    assert len(buckets) > 5


async def test_stream_requests_are_timed_under_templates_never_concrete_paths(
    client: httpx.AsyncClient,
) -> None:
    await client.get(TOKENIZED_URL, headers=AUTH)
    await client.post(
        f"{TOKENIZED_URL}/groups/grpQZX123/read", json={"consumer": "cnsQZX456"}, headers=AUTH
    )
    await client.get("/v1/streams/topicQZX789", headers=AUTH)
    await client.get("/no/such/pageQZX", headers=AUTH)

    counts = await _request_counts(client)
    routes = {labels.get("route", "") for _, labels, _ in await metric_samples(client)}

    assert counts[("/v1/streams/{topic}", "GET")] == 2
    assert counts[("/v1/streams/{topic}/groups/{group}/read", "POST")] == 1
    assert not any("QZX" in route for route in routes), routes
    assert not any("payments.tokenized" in route for route in routes), routes


async def test_requests_total_counts_statuses(client: httpx.AsyncClient) -> None:
    await client.get(TOKENIZED_URL, headers=AUTH)
    await client.get(TOKENIZED_URL, headers=AUTH)
    await client.get(TOKENIZED_URL, params={"limit": 0}, headers=AUTH)
    await client.get(TOKENIZED_URL)

    total = "strongroom_http_requests_total"
    route = "/v1/streams/{topic}"
    assert await metric_value(client, total, route=route, status="200") == 2
    assert await metric_value(client, total, route=route, status="422") == 1
    assert await metric_value(client, total, status="401") == 1


async def test_auth_denied_and_rate_limited_counters_move(serve: Any) -> None:
    async with serve(ratelimit_burst=2, ratelimit_rps=0.1) as app, peer(app) as http:
        await http.get(TOKENIZED_URL)
        await http.get(TOKENIZED_URL, headers={"Authorization": "Bearer nope-nope-nope-nope"})
        await http.get(TOKENIZED_URL, headers={"Authorization": "Bearer nope-nope-nope-nope"})
        for _ in range(5):
            await http.get(TOKENIZED_URL, headers=AUTH)

        assert await metric_value(http, "strongroom_auth_denied_total", reason="missing") == 1
        assert await metric_value(http, "strongroom_auth_denied_total", reason="unknown") == 2
        assert await metric_value(http, "strongroom_rate_limited_total", kind="key") == 3
        assert await metric_value(http, "strongroom_rate_limited_total", kind="ip") == 0


async def test_stream_log_length_tracks_stored_records(client: httpx.AsyncClient) -> None:
    events = [card_free_event() for _ in range(7)]
    await post(client, {"events": events})
    await post(client, {"events": events[:3]})

    length = await metric_value(client, "strongroom_stream_log_length", topic="payments.tokenized")

    assert length == 7 == len(await stored_ids(client))


@pytest.mark.parametrize("key", [KEY, OTHER_KEY])
async def test_no_label_holds_an_event_id_a_hash_or_a_key(
    client: httpx.AsyncClient, key: str
) -> None:
    events = [card_free_event() for _ in range(5)]
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    await client.post("/v1/events", content=json.dumps({"events": events}), headers=headers)
    await client.post("/v1/events", content=json.dumps(events[0]), headers=headers)
    bad = card_free_event(retry_count=-5)
    await client.post("/v1/events", content=json.dumps(bad), headers=headers)
    await client.get(TOKENIZED_URL, headers={"Authorization": "Bearer guess-guess-guess-1234"})
    await client.get(f"/v1/streams/{events[0]['event_id']}", headers=headers)

    text = (await client.get("/metrics")).text
    samples = await metric_samples(client)

    secrets = [KEY, OTHER_KEY, "guess-guess-guess-1234"]
    for e in [*events, bad]:
        secrets += [e["event_id"], e["merchant_id_hash"], e["payment_intent_id_hash"]]
    values = [value for _, labels, _ in samples for value in labels.values()]
    for secret in secrets:
        assert secret not in text
        assert all(secret not in value for value in values)
    assert not any(value.startswith("key_") for value in values), "no per-key labels"
