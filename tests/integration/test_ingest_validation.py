"""Every validation rule of ``POST /v1/events`` and ``POST /v1/events/payment_exhaust``.

What is checked, through the real app in process:

1. A valid event or batch of 1 to 100 events is acknowledged with 202 and stored.
2. Each field rule of the PayFlux schema is enforced, alone and inside a batch, and
   the refusal names the field path (``retry_count``, ``events[3].retry_count``).
3. One bad event refuses its whole batch and nothing of that batch is stored.
4. Body-level rules: JSON only (415 otherwise), valid JSON (422), at most 1 MiB
   (413, declared or streamed), each event at most ``max_event_bytes`` (413).
5. Every refusal is an RFC 9457 problem and echoes none of the values sent.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from integration_support import Failures, error_fields, stored_ids, stored_records

from support import AUTH, JSON_HEADERS, TOKENIZED_URL, card_free_event
from support_app import peer
from support_problems import assert_problem

EVENTS = "/v1/events"
EXHAUST = "/v1/events/payment_exhaust"
ROUTES = [EVENTS, EXHAUST]
MIB = 1024 * 1024
SENTINEL = "QZXSentinelVJ7K"

LABEL_FIELDS = [
    "event_type",
    "failure_category",
    "geo_bucket",
    "amount_bucket",
    "system_source",
    "payment_method_bucket",
    "channel",
    "retry_result",
    "failure_origin",
]
HASH_FIELDS = ["merchant_id_hash", "payment_intent_id_hash"]


def _metadata(keys: int) -> dict[str, str]:
    return {f"key{i}": "value" for i in range(keys)}


# (case id, overrides applied to a valid event, the field path the refusal must name)
INVALID_FIELDS: list[tuple[str, dict[str, Any], str]] = [
    ("event_id-not-uuid", {"event_id": "not-a-uuid"}, "event_id"),
    ("event_id-truncated", {"event_id": str(uuid.uuid4())[:-1]}, "event_id"),
    ("event_id-number", {"event_id": 12345}, "event_id"),
    ("event_id-empty", {"event_id": ""}, "event_id"),
    ("timestamp-no-offset", {"event_timestamp": "2026-11-22T10:00:00"}, "event_timestamp"),
    ("timestamp-date-only", {"event_timestamp": "2026-11-22"}, "event_timestamp"),
    ("timestamp-human", {"event_timestamp": "22/11/2026 10:00:00+00:00"}, "event_timestamp"),
    ("timestamp-words", {"event_timestamp": "yesterday"}, "event_timestamp"),
    ("timestamp-epoch-number", {"event_timestamp": 1795000000}, "event_timestamp"),
    ("timestamp-bad-month", {"event_timestamp": "2026-13-22T10:00:00Z"}, "event_timestamp"),
    ("processor-uppercase", {"processor": "Stripe"}, "processor"),
    ("processor-space", {"processor": "stripe eu"}, "processor"),
    ("processor-leading-dash", {"processor": "-stripe"}, "processor"),
    ("processor-empty", {"processor": ""}, "processor"),
    ("processor-65-chars", {"processor": "p" * 65}, "processor"),
    ("processor-number", {"processor": 7}, "processor"),
    ("retry_count-negative", {"retry_count": -1}, "retry_count"),
    ("retry_count-101", {"retry_count": 101}, "retry_count"),
    ("retry_count-string", {"retry_count": "3"}, "retry_count"),
    ("retry_count-true", {"retry_count": True}, "retry_count"),
    ("retry_count-float", {"retry_count": 1.5}, "retry_count"),
    ("retry_count-null", {"retry_count": None}, "retry_count"),
    *[(f"{name}-65-chars", {name: "x" * 65}, name) for name in LABEL_FIELDS],
    *[(f"{name}-empty", {name: ""}, name) for name in LABEL_FIELDS],
    *[(f"{name}-number", {name: 1}, name) for name in LABEL_FIELDS],
    *[(f"{name}-129-chars", {name: "h" * 129}, name) for name in HASH_FIELDS],
    *[(f"{name}-empty", {name: ""}, name) for name in HASH_FIELDS],
    ("event_type-missing", {"event_type": ...}, "event_type"),
    ("event_id-missing", {"event_id": ...}, "event_id"),
    ("amount-negative", {"amount": -1}, "amount"),
    ("amount-float", {"amount": 10.5}, "amount"),
    ("amount-whole-float", {"amount": 10.0}, "amount"),
    ("amount-string", {"amount": "100"}, "amount"),
    ("amount-true", {"amount": True}, "amount"),
    ("amount-over-bound", {"amount": 10**15 + 1}, "amount"),
    ("currency-lowercase", {"currency": "usd"}, "currency"),
    ("currency-four-letters", {"currency": "EURO"}, "currency"),
    ("currency-two-letters", {"currency": "EU"}, "currency"),
    ("currency-digit", {"currency": "U5D"}, "currency"),
    ("metadata-21-keys", {"metadata": _metadata(21)}, "metadata"),
    # A caller's own key is never echoed: the path names it "<key>".
    ("metadata-65-char-key", {"metadata": {"k" * 65: "v"}}, "metadata.<key>"),
    ("metadata-empty-key", {"metadata": {"": "v"}}, "metadata.<key>"),
    ("metadata-257-char-value", {"metadata": {"note": "v" * 257}}, "metadata.note"),
    ("metadata-number-value", {"metadata": {"attempt": 3}}, "metadata.attempt"),
    ("metadata-null-value", {"metadata": {"attempt": None}}, "metadata.attempt"),
    ("metadata-nested-value", {"metadata": {"attempt": {"n": "3"}}}, "metadata.attempt"),
    ("metadata-not-object", {"metadata": ["a", "b"]}, "metadata"),
    ("unknown-field", {"surprise": "x"}, "surprise"),
    # Labels, hashes and metadata keys hold no control characters; values no NUL.
    ("event_type-newline", {"event_type": "payment\nfailed"}, "event_type"),
    ("failure_category-delete", {"failure_category": "declined\x7f"}, "failure_category"),
    ("merchant_id_hash-nul", {"merchant_id_hash": "m_\x00"}, "merchant_id_hash"),
    ("metadata-tab-in-key", {"metadata": {"a\tb": "v"}}, "metadata.<key>"),
    ("metadata-nul-in-value", {"metadata": {"note": "a\x00b"}}, "metadata.note"),
]

# Values at the exact edge of each bound, which must all be accepted.
VALID_EDGES: list[tuple[str, dict[str, Any]]] = [
    ("retry_count-0", {"retry_count": 0}),
    ("retry_count-100", {"retry_count": 100}),
    ("labels-64-chars", dict.fromkeys(LABEL_FIELDS, "x" * 64)),
    ("hashes-128-chars", dict.fromkeys(HASH_FIELDS, "h" * 128)),
    ("processor-64-chars", {"processor": "p" * 64}),
    ("processor-slug-punctuation", {"processor": "0adyen_eu.v2-live"}),
    ("amount-0", {"amount": 0, "currency": "EUR"}),
    ("amount-max", {"amount": 10**15, "currency": "JPY"}),
    ("timestamp-offset", {"event_timestamp": "2026-11-22T10:00:00.123456+05:30"}),
    ("timestamp-negative-offset", {"event_timestamp": "2026-11-22T10:00:00-08:00"}),
    ("metadata-20-keys", {"metadata": _metadata(20)}),
    ("metadata-64-char-key", {"metadata": {"k" * 64: "v"}}),
    ("metadata-256-char-value", {"metadata": {"note": "v" * 256}}),
    ("metadata-empty", {"metadata": {}}),
    ("metadata-value-newline", {"metadata": {"note": "line one\nline two"}}),
    ("labels-non-ascii", {"event_type": "paiement.échoué", "channel": "カード"}),
    ("optional-fields-absent", dict.fromkeys([*LABEL_FIELDS[1:], *HASH_FIELDS], ...)),
    ("optional-fields-null", dict.fromkeys([*LABEL_FIELDS[1:], *HASH_FIELDS])),
]


def build(**overrides: Any) -> dict[str, Any]:
    """A valid event with overrides; an override of ``...`` removes the field."""
    body = card_free_event()
    for name, value in overrides.items():
        if value is ...:
            body.pop(name, None)
        else:
            body[name] = value
    return body


async def post(
    client: httpx.AsyncClient, body: object, route: str = EVENTS, *, escaped: bool = True
) -> httpx.Response:
    """POST ``body`` as JSON; ``escaped=False`` sends non-ASCII and DEL as raw UTF-8."""
    return await client.post(
        route, content=json.dumps(body, ensure_ascii=escaped), headers=JSON_HEADERS
    )


#: Both ways a client may spell text: escapes only, or raw UTF-8 (no backslash
#: unless the text needs one), which bodies are validated differently for.
SPELLINGS = {"escaped": True, "raw UTF-8": False}


# -- acceptance ---------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
async def test_a_valid_single_event_is_acknowledged_with_its_id_and_stored(
    client: httpx.AsyncClient, route: str
) -> None:
    body = card_free_event()

    response = await post(client, body, route)

    assert response.status_code == 202, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"accepted": [body["event_id"]], "duplicates": []}
    records = await stored_records(client)
    assert [r["record"]["event_id"] for r in records] == [body["event_id"]]
    stored = records[0]["record"]
    for name in ("event_type", "processor", "merchant_id_hash", "retry_count", "channel"):
        assert stored[name] == body[name]


async def test_batches_of_1_to_100_events_are_acknowledged_in_order(
    client: httpx.AsyncClient,
) -> None:
    expected: list[str] = []
    for size in (1, 2, 37, 100):
        events = [card_free_event() for _ in range(size)]

        response = await post(client, {"events": events})

        assert response.status_code == 202, f"size {size}: {response.text}"
        ids = [e["event_id"] for e in events]
        assert response.json() == {"accepted": ids, "duplicates": []}
        expected += ids
    assert await stored_ids(client) == expected


async def test_batches_of_0_or_101_events_are_refused_and_nothing_is_stored(
    client: httpx.AsyncClient,
) -> None:
    for size in (0, 101):
        response = await post(client, {"events": [card_free_event() for _ in range(size)]})

        body = assert_problem(response, 422, "validation_failed")
        assert error_fields(body) == {"events"}, f"size {size}: {body}"
    assert await stored_ids(client) == []


async def test_values_at_the_edge_of_each_bound_are_accepted(client: httpx.AsyncClient) -> None:
    failures = Failures()
    accepted = []
    for (case, overrides), (spelling, escaped) in itertools.product(VALID_EDGES, SPELLINGS.items()):
        with failures.case(f"{case}, {spelling}"):
            body = build(**overrides)
            response = await post(client, body, escaped=escaped)
            assert response.status_code == 202, response.text
            accepted.append(body["event_id"])
    failures.check()
    assert await stored_ids(client) == accepted


async def test_json_content_type_with_parameters_is_accepted(client: httpx.AsyncClient) -> None:
    body = card_free_event()
    headers = {**AUTH, "Content-Type": "Application/JSON; charset=utf-8"}

    response = await client.post(EVENTS, content=json.dumps(body), headers=headers)

    assert response.status_code == 202, response.text


# -- field rules --------------------------------------------------------------------

RULES_BY_FIELD: dict[str, list[tuple[str, dict[str, Any], str]]] = {}
for _case in INVALID_FIELDS:
    RULES_BY_FIELD.setdefault(_case[2].split(".")[0], []).append(_case)


@pytest.mark.parametrize("field", list(RULES_BY_FIELD))
async def test_each_field_rule_refuses_the_event_alone_and_in_a_batch(
    client: httpx.AsyncClient, field: str
) -> None:
    """Every invalid value of ``field``: refused on both routes and at index 3 of a batch."""
    failures = Failures()
    for (case, overrides, path), (spelling, escaped) in itertools.product(
        RULES_BY_FIELD[field], SPELLINGS.items()
    ):
        for route in ROUTES:
            with failures.case(f"{case} on {route}, {spelling}"):
                response = await post(client, build(**overrides), route, escaped=escaped)
                body = assert_problem(response, 422, "validation_failed")
                assert path in error_fields(body), body
        with failures.case(f"{case} in a batch, {spelling}"):
            events = [card_free_event() for _ in range(5)]
            events[3] = build(**overrides)
            response = await post(client, {"events": events}, escaped=escaped)
            body = assert_problem(response, 422, "validation_failed")
            assert f"events[3].{path}" in error_fields(body), body
    failures.check()
    assert await stored_ids(client) == []


async def test_every_failing_index_and_field_is_named_and_nothing_of_the_batch_is_stored(
    client: httpx.AsyncClient,
) -> None:
    events = [card_free_event() for _ in range(6)]
    events[1]["currency"] = "usd"
    events[3]["retry_count"] = "3"
    events[3]["processor"] = "Stripe"
    events[5]["extra"] = "x"

    response = await post(client, {"events": events})

    body = assert_problem(response, 422, "validation_failed")
    assert error_fields(body) == {
        "events[1].currency",
        "events[3].retry_count",
        "events[3].processor",
        "events[5].extra",
    }
    assert await stored_ids(client) == []
    # The valid events of the refused batch were not kept either: sending them alone now
    # stores them as new, not as duplicates.
    valid = [events[0], events[2], events[4]]
    retry = await post(client, {"events": valid})
    assert retry.json() == {"accepted": [e["event_id"] for e in valid], "duplicates": []}


async def test_an_unknown_field_beside_the_events_list_refuses_the_batch(
    client: httpx.AsyncClient,
) -> None:
    response = await post(client, {"events": [card_free_event()], "source": "x"})

    body = assert_problem(response, 422, "validation_failed")
    assert "source" in error_fields(body)
    assert await stored_ids(client) == []


async def test_an_events_member_that_is_not_a_list_of_objects_is_refused(
    client: httpx.AsyncClient,
) -> None:
    failures = Failures()
    for events in (None, "events", {"0": "x"}, [1, 2], ["x"]):
        with failures.case(repr(events)):
            body = assert_problem(await post(client, {"events": events}), 422, "validation_failed")
            assert all(field.startswith("events") for field in error_fields(body)), body
    failures.check()
    assert await stored_ids(client) == []


async def test_payment_exhaust_refuses_a_batch_body(client: httpx.AsyncClient) -> None:
    response = await post(client, {"events": [card_free_event(), card_free_event()]}, EXHAUST)

    body = assert_problem(response, 422, "validation_failed")
    assert "events" in error_fields(body)
    assert await stored_ids(client) == []


# -- body rules -------------------------------------------------------------------

NOT_JSON: list[tuple[str, bytes]] = [
    ("open-brace", b"{"),
    ("words", b"not json"),
    ("missing-value", b'{"event_id": }'),
    ("empty", b""),
    ("trailing-garbage", b'{"a": 1} trailing'),
    ("bad-utf8", b"\xff\xfe{}"),
    ("unterminated-non-ascii", b'{"note": "caf\xc3\xa9"'),
    ("unterminated-unicode-escape", b'{"note": "\\u00e9"'),
]


async def test_a_body_that_is_not_json_is_refused_with_422(client: httpx.AsyncClient) -> None:
    # None of these bodies holds a digit, so none may be reported as a card number.
    failures = Failures()
    for case, raw in NOT_JSON:
        for route in ROUTES:
            with failures.case(f"{case} on {route}"):
                response = await client.post(route, content=raw, headers=JSON_HEADERS)
                body = assert_problem(response, 422, "validation_failed")
                assert body["errors"], body
    failures.check()
    assert await stored_ids(client) == []


async def test_json_that_is_not_an_object_is_refused_with_422(client: httpx.AsyncClient) -> None:
    failures = Failures()
    for document in ([], [card_free_event()], "event", 42, None, True):
        with failures.case(repr(document)[:40]):
            assert_problem(await post(client, document), 422, "validation_failed")
    failures.check()
    assert await stored_ids(client) == []


async def test_a_body_not_sent_as_json_is_refused_with_415(client: httpx.AsyncClient) -> None:
    failures = Failures()
    for content_type in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "text/json",
        "application/octet-stream",
    ):
        for route in ROUTES:
            with failures.case(f"{content_type} on {route}"):
                headers = {**AUTH, "Content-Type": content_type}
                response = await client.post(
                    route, content=json.dumps(card_free_event()), headers=headers
                )
                assert_problem(response, 415, "unsupported_media_type")
    failures.check()
    assert await stored_ids(client) == []


def _padded_batch(total: int) -> bytes:
    """A valid batch, padded with JSON whitespace to exactly ``total`` bytes."""
    note = "n" * 256
    events = [card_free_event(metadata={f"key{i}": note for i in range(20)}) for _ in range(100)]
    raw = json.dumps({"events": events}).encode()
    assert len(raw) <= total
    return raw + b" " * (total - len(raw))


async def test_a_body_of_exactly_1_mib_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post(EVENTS, content=_padded_batch(MIB), headers=JSON_HEADERS)

    assert response.status_code == 202, response.text
    assert len(response.json()["accepted"]) == 100


async def test_a_body_over_1_mib_with_content_length_is_refused_with_413(
    client: httpx.AsyncClient,
) -> None:
    raw = _padded_batch(MIB + 1)

    response = await client.post(EVENTS, content=raw, headers=JSON_HEADERS)

    assert_problem(response, 413, "payload_too_large")
    assert await stored_ids(client) == []


async def _chunks(raw: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(raw), size):
        yield raw[start : start + size]


async def test_a_streamed_body_over_1_mib_without_content_length_is_refused_with_413(
    client: httpx.AsyncClient,
) -> None:
    raw = _padded_batch(MIB + 1)
    for route in ROUTES:
        response = await client.post(route, content=_chunks(raw), headers=JSON_HEADERS)

        assert "content-length" not in response.request.headers
        assert_problem(response, 413, "payload_too_large")
    assert await stored_ids(client) == []


async def test_a_streamed_body_under_the_limit_is_accepted(client: httpx.AsyncClient) -> None:
    body = {"events": [card_free_event() for _ in range(10)]}

    response = await client.post(
        EVENTS, content=_chunks(json.dumps(body).encode(), 100), headers=JSON_HEADERS
    )

    assert response.status_code == 202, response.text
    assert len(await stored_ids(client)) == 10


async def test_a_malformed_content_length_is_refused_before_the_body_is_read(
    client: httpx.AsyncClient,
) -> None:
    for declared in ("abc", "-1", "1e3"):
        headers = {**JSON_HEADERS, "Content-Length": declared}
        request = client.build_request(
            "POST", EVENTS, content=json.dumps(card_free_event()), headers=headers
        )

        response = await client.send(request)

        assert 400 <= response.status_code < 500, declared
        assert response.headers["content-type"].startswith("application/problem+json")
    assert await stored_ids(client) == []


def _small_event() -> dict[str, Any]:
    """An event whose stored form stays well under 256 bytes."""
    return build(**dict.fromkeys([*LABEL_FIELDS[1:], *HASH_FIELDS], ...))


async def test_an_event_over_max_event_bytes_is_refused_with_413(serve: Any) -> None:
    async with serve(max_event_bytes=256) as app, peer(app) as http:
        small = _small_event()
        big = card_free_event(metadata={"note": "n" * 200})

        refused_single = await post(http, big)
        refused_batch = await post(http, {"events": [small, big, _small_event()]})
        accepted = await post(http, small)

        body = assert_problem(refused_single, 413, "payload_too_large")
        assert error_fields(body) == {"body"}
        body = assert_problem(refused_batch, 413, "payload_too_large")
        assert error_fields(body) == {"events[1]"}
        assert accepted.status_code == 202, accepted.text
        assert await stored_ids(http) == [small["event_id"]]


async def test_the_default_max_event_bytes_is_not_reachable_with_valid_metadata(
    client: httpx.AsyncClient,
) -> None:
    # The largest valid event (20 keys of 64 characters, values of 256) stays under 64 KiB.
    metadata = {f"{i:02d}".ljust(64, "k"): "v" * 256 for i in range(20)}
    body = card_free_event(metadata=metadata, **dict.fromkeys(LABEL_FIELDS, "x" * 64))

    response = await post(client, body)

    assert response.status_code == 202, response.text


# -- error bodies -------------------------------------------------------------------

SENTINEL_CASES: list[tuple[str, bytes]] = [
    ("event_id", json.dumps(build(event_id=SENTINEL)).encode()),
    ("event_timestamp", json.dumps(build(event_timestamp=SENTINEL)).encode()),
    ("processor", json.dumps(build(processor=SENTINEL)).encode()),
    ("event_type-long", json.dumps(build(event_type=SENTINEL * 10)).encode()),
    ("merchant-long", json.dumps(build(merchant_id_hash=SENTINEL * 20)).encode()),
    ("currency", json.dumps(build(currency=SENTINEL)).encode()),
    ("amount-string", json.dumps(build(amount=SENTINEL)).encode()),
    ("retry_count-string", json.dumps(build(retry_count=SENTINEL)).encode()),
    ("metadata-long-value", json.dumps(build(metadata={"note": SENTINEL * 30})).encode()),
    ("metadata-list-value", json.dumps(build(metadata={"note": [SENTINEL]})).encode()),
    ("metadata-long-key", json.dumps(build(metadata={SENTINEL * 5: "v"})).encode()),
    ("unknown-field-value", json.dumps(build(extra=SENTINEL)).encode()),
    ("batch-item-string", json.dumps({"events": [SENTINEL]}).encode()),
    (
        "batch-bad-item",
        json.dumps({"events": [card_free_event(), build(currency=SENTINEL)]}).encode(),
    ),
    ("events-string", json.dumps({"events": SENTINEL}).encode()),
    ("top-level-string", json.dumps(SENTINEL).encode()),
    ("invalid-json", f'{{"event_id": {SENTINEL}}}'.encode()),
    ("invalid-json-tail", f'{{"event_id": "x"}} {SENTINEL}'.encode()),
]


async def test_no_refusal_echoes_the_values_sent(client: httpx.AsyncClient) -> None:
    failures = Failures()
    for case, raw in SENTINEL_CASES:
        for route in ROUTES:
            with failures.case(f"{case} on {route}"):
                response = await client.post(route, content=raw, headers=JSON_HEADERS)
                body = assert_problem(response, 422)
                assert body["errors"], body
                assert SENTINEL.lower() not in response.text.lower(), response.text
                for name, value in response.headers.items():
                    assert SENTINEL.lower() not in f"{name}: {value}".lower()
    failures.check()


async def test_a_413_and_a_415_do_not_echo_the_body(client: httpx.AsyncClient) -> None:
    raw = _padded_batch(MIB + 1).replace(b'"event_type"', f'"{SENTINEL}"'.encode(), 1)
    too_big = await client.post(EVENTS, content=raw, headers=JSON_HEADERS)
    wrong_type = await client.post(
        EVENTS,
        content=json.dumps(build(processor=SENTINEL)),
        headers={**AUTH, "Content-Type": "text/plain"},
    )

    for response, status in ((too_big, 413), (wrong_type, 415)):
        assert_problem(response, status)
        assert SENTINEL not in response.text


async def test_the_stream_is_empty_after_only_refusals(client: httpx.AsyncClient) -> None:
    for _, overrides, _ in INVALID_FIELDS:
        await post(client, build(**overrides))

    response = await client.get(TOKENIZED_URL, headers=AUTH)

    assert response.status_code == 200
    assert response.json() == {"data": [], "next": None}
