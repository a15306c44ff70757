"""Idempotency on ``event_id`` and the order of ``payments.tokenized`` (invariant 5).

1. An event id already stored is answered as a duplicate and never stored twice,
   whether it comes again later, twice in one batch, or from many concurrent requests.
2. The first body stored for an id wins; a retry never overwrites it.
3. Offsets are strictly increasing, and a batch keeps its submission order.
4. ``GET /v1/streams/payments.tokenized`` pages with ``after``/``limit`` and ``next``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from integration_support import Failures, error_fields, stored_ids, stored_records

from strongroom.api.app import create_app
from support import JSON_HEADERS, OTHER_KEY, TOKENIZED_URL, card_free_event
from support_app import make_settings, peer, running
from support_problems import assert_problem

EVENTS = "/v1/events"
EXHAUST = "/v1/events/payment_exhaust"


async def post(client: httpx.AsyncClient, body: object, route: str = EVENTS) -> httpx.Response:
    return await client.post(route, content=json.dumps(body), headers=JSON_HEADERS)


async def test_the_same_event_twice_is_stored_once_and_answered_as_a_duplicate(
    client: httpx.AsyncClient,
) -> None:
    body = card_free_event()

    first = await post(client, body)
    second = await post(client, body)

    assert first.status_code == 202
    assert first.json() == {"accepted": [body["event_id"]], "duplicates": []}
    assert second.status_code == 202
    assert second.json() == {"accepted": [], "duplicates": [body["event_id"]]}
    assert await stored_ids(client) == [body["event_id"]]


async def test_a_retry_with_a_different_body_does_not_overwrite_the_first(
    client: httpx.AsyncClient,
) -> None:
    original = card_free_event(retry_count=1)
    changed = {**original, "retry_count": 2, "channel": "pos"}

    await post(client, original)
    retry = await post(client, changed)

    assert retry.json() == {"accepted": [], "duplicates": [original["event_id"]]}
    (record,) = await stored_records(client)
    assert record["record"]["retry_count"] == 1
    assert record["record"]["channel"] == original["channel"]


async def test_an_id_is_a_duplicate_across_both_ingest_routes_and_both_keys(
    client: httpx.AsyncClient,
) -> None:
    body = card_free_event()
    other_key = {**JSON_HEADERS, "Authorization": f"Bearer {OTHER_KEY}"}

    first = await post(client, body, EXHAUST)
    again = await post(client, {"events": [body]})
    from_other_key = await client.post(EVENTS, content=json.dumps(body), headers=other_key)

    assert first.json()["accepted"] == [body["event_id"]]
    assert again.json() == {"accepted": [], "duplicates": [body["event_id"]]}
    assert from_other_key.json() == {"accepted": [], "duplicates": [body["event_id"]]}
    assert await stored_ids(client) == [body["event_id"]]


async def test_a_duplicate_inside_one_batch_is_stored_once(client: httpx.AsyncClient) -> None:
    a, b = card_free_event(), card_free_event()
    a_again = {**a, "channel": "pos"}

    response = await post(client, {"events": [a, b, a_again, b]})

    assert response.status_code == 202
    assert response.json() == {
        "accepted": [a["event_id"], b["event_id"]],
        "duplicates": [a["event_id"], b["event_id"]],
    }
    records = await stored_records(client)
    assert [r["record"]["event_id"] for r in records] == [a["event_id"], b["event_id"]]
    assert records[0]["record"]["channel"] == a["channel"]


async def test_a_batch_mixing_stored_and_new_events_stores_only_the_new(
    client: httpx.AsyncClient,
) -> None:
    old = [card_free_event() for _ in range(3)]
    new = [card_free_event() for _ in range(3)]
    await post(client, {"events": old})

    mixed = [new[0], old[0], new[1], old[1], new[2], old[2]]
    response = await post(client, {"events": mixed})

    assert response.json() == {
        "accepted": [e["event_id"] for e in new],
        "duplicates": [e["event_id"] for e in old],
    }
    assert await stored_ids(client) == [e["event_id"] for e in old + new]


async def test_ids_are_compared_as_uuids_so_case_does_not_create_a_second_record(
    client: httpx.AsyncClient,
) -> None:
    body = card_free_event()
    upper = {**body, "event_id": body["event_id"].upper()}

    await post(client, body)
    again = await post(client, upper)

    assert again.json()["accepted"] == []
    assert await stored_ids(client) == [body["event_id"]]


async def test_50_concurrent_requests_with_overlapping_ids_store_each_id_exactly_once(
    client: httpx.AsyncClient,
) -> None:
    pool = [card_free_event() for _ in range(40)]
    chooser = random.Random(20261122)
    batches = [chooser.sample(pool, 8) for _ in range(50)]

    responses = await asyncio.gather(*(post(client, {"events": batch}) for batch in batches))

    accepted: Counter[str] = Counter()
    for batch, response in zip(batches, responses, strict=True):
        assert response.status_code == 202, response.text
        answer = response.json()
        assert sorted(answer["accepted"] + answer["duplicates"]) == sorted(
            e["event_id"] for e in batch
        )
        accepted.update(answer["accepted"])
    used = {e["event_id"] for batch in batches for e in batch}
    assert accepted == Counter(used), "each id must be accepted by exactly one request"
    stored = Counter(await stored_ids(client))
    assert stored == Counter(used)
    assert max(stored.values()) == 1


async def test_concurrent_single_events_each_get_a_distinct_increasing_offset(
    client: httpx.AsyncClient,
) -> None:
    events = [card_free_event() for _ in range(50)]

    responses = await asyncio.gather(*(post(client, e) for e in events))

    assert all(r.status_code == 202 for r in responses)
    records = await stored_records(client)
    offsets = [r["offset"] for r in records]
    assert offsets == sorted(set(offsets))
    assert len(offsets) == 50
    assert {r["record"]["event_id"] for r in records} == {e["event_id"] for e in events}


async def test_a_batch_keeps_its_submission_order_with_strictly_increasing_offsets(
    client: httpx.AsyncClient,
) -> None:
    first = [card_free_event() for _ in range(30)]
    second = [card_free_event() for _ in range(30)]

    await post(client, {"events": first})
    await post(client, {"events": second})

    records = await stored_records(client)
    assert [r["record"]["event_id"] for r in records] == [e["event_id"] for e in first + second]
    offsets = [r["offset"] for r in records]
    assert all(a < b for a, b in itertools.pairwise(offsets))
    assert all(r["topic"] == "payments.tokenized" for r in records)


async def test_a_record_is_keyed_by_merchant_else_processor(client: httpx.AsyncClient) -> None:
    with_merchant = card_free_event(merchant_id_hash="m_abc")
    without_merchant = card_free_event(processor="adyen")
    without_merchant.pop("merchant_id_hash")

    await post(client, {"events": [with_merchant, without_merchant]})

    keys = [r["key"] for r in await stored_records(client)]
    assert keys == ["m_abc", "adyen"]


async def test_a_duplicate_is_recognised_after_the_gateway_restarts(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    body = card_free_event()

    async with running(create_app(settings)) as app, peer(app) as http:
        assert (await post(http, body)).json()["accepted"] == [body["event_id"]]
    async with running(create_app(settings)) as app, peer(app) as http:
        again = await post(http, body)
        assert again.json() == {"accepted": [], "duplicates": [body["event_id"]]}
        assert await stored_ids(http) == [body["event_id"]]


# -- pagination ------------------------------------------------------------------------


async def _page(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await client.get(TOKENIZED_URL, params=params, headers=JSON_HEADERS)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


async def test_pages_walk_the_topic_in_order_with_after_limit_and_next(
    client: httpx.AsyncClient,
) -> None:
    events = [card_free_event() for _ in range(25)]
    await post(client, {"events": events})

    first = await _page(client, limit=10)
    second = await _page(client, limit=10, after=first["next"])
    third = await _page(client, limit=10, after=second["next"])

    assert len(first["data"]) == 10
    assert len(second["data"]) == 10
    assert len(third["data"]) == 5
    assert first["next"] == first["data"][-1]["offset"]
    assert second["next"] == second["data"][-1]["offset"]
    assert third["next"] is None
    walked = [r["record"]["event_id"] for page in (first, second, third) for r in page["data"]]
    assert walked == [e["event_id"] for e in events]


async def test_after_is_exclusive_and_minus_one_means_from_the_start(
    client: httpx.AsyncClient,
) -> None:
    await post(client, {"events": [card_free_event() for _ in range(5)]})
    everything = await _page(client)
    offsets = [r["offset"] for r in everything["data"]]

    from_start = await _page(client, after=-1)
    after_second = await _page(client, after=offsets[1])
    past_the_end = await _page(client, after=offsets[-1])

    assert [r["offset"] for r in from_start["data"]] == offsets
    assert [r["offset"] for r in after_second["data"]] == offsets[2:]
    assert past_the_end == {"data": [], "next": None}
    assert everything["next"] is None


async def test_an_empty_topic_reads_as_an_empty_page(client: httpx.AsyncClient) -> None:
    assert await _page(client) == {"data": [], "next": None}


async def test_the_default_page_is_at_most_100_records(client: httpx.AsyncClient) -> None:
    await post(client, {"events": [card_free_event() for _ in range(100)]})
    await post(client, {"events": [card_free_event() for _ in range(5)]})

    page = await _page(client)

    assert len(page["data"]) == 100
    assert page["next"] == page["data"][-1]["offset"]
    rest = await _page(client, after=page["next"])
    assert len(rest["data"]) == 5


async def test_bad_paging_parameters_are_refused_with_422(client: httpx.AsyncClient) -> None:
    failures = Failures()
    for params in ({"limit": 0}, {"limit": 1001}, {"limit": "ten"}, {"after": -2}, {"after": "x"}):
        with failures.case(repr(params)):
            response = await client.get(TOKENIZED_URL, params=params, headers=JSON_HEADERS)
            problem = assert_problem(response, 422, "validation_failed")
            (name,) = params
            assert any(name in entry["field"] for entry in problem["errors"]), problem
    failures.check()


@pytest.mark.parametrize("after", [2**63 - 1, 2**63, 10**400], ids=["2^63-1", "2^63", "10^400"])
async def test_an_after_beyond_any_offset_is_not_a_server_error(
    client: httpx.AsyncClient, after: int
) -> None:
    await post(client, card_free_event())

    response = await client.get(TOKENIZED_URL, params={"after": after}, headers=JSON_HEADERS)

    # Past the end there is nothing to read: an empty page, or a 422 naming the
    # parameter, are both answers; a 500 is not.
    if response.status_code == 200:
        assert response.json() == {"data": [], "next": None}
    else:
        problem = assert_problem(response, 422, "validation_failed")
        assert any("after" in field for field in error_fields(problem)), problem
