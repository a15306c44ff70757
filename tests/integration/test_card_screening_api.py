"""Card screening at the HTTP boundary (security invariants 1 and 2).

1. A PAN (13-19 digits passing Luhn, spaces or dashes allowed) anywhere in a request,
   outside the card field, is refused with 422 ``pan_detected`` naming the field path;
   the digits, in any grouping, appear nowhere in the response body or headers.
2. A key naming CVV/CVC/PIN/track data, at any depth, is refused with 422
   ``sensitive_authentication_data``.
3. Nothing of a refused request is stored.
4. Numbers that are not PANs (Luhn fails, too long) pass, so the screen is not a blanket
   ban on digits.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from integration_support import Failures, assert_no_digits_of, error_fields, stored_ids

from support import AUTH, JSON_HEADERS, TOKENIZED_URL, card_free_event
from support_problems import assert_problem

EVENTS = "/v1/events"
EXHAUST = "/v1/events/payment_exhaust"

VISA = "4111111111111111"
AMEX = "378282246310005"
MASTERCARD = "5555555555554444"
DISCOVER = "6011111111111117"

# (id, text holding a PAN, the PAN's bare digits)
PAN_TEXTS: list[tuple[str, str, str]] = [
    ("visa-plain", VISA, VISA),
    ("visa-spaced", "4111 1111 1111 1111", VISA),
    ("visa-dashed", "4111-1111-1111-1111", VISA),
    ("amex-plain", AMEX, AMEX),
    ("amex-grouped", "3782 822463 10005", AMEX),
    ("mastercard-in-words", f"card {MASTERCARD} declined", MASTERCARD),
    ("discover-glued-to-letters", f"ref{DISCOVER}x", DISCOVER),
    ("visa-full-width", "".join(chr(0xFF10 + int(d)) for d in VISA), VISA),
]

# (id, where the PAN goes in an event, the field path the refusal must name)
PLACES: list[tuple[str, Any, str]] = [
    ("metadata-value", lambda pan: {"metadata": {"note": pan}}, "metadata.note"),
    ("metadata-key", lambda pan: {"metadata": {pan: "x"}}, "metadata.<key>"),
    ("event_type", lambda pan: {"event_type": pan}, "event_type"),
    ("failure_category", lambda pan: {"failure_category": pan}, "failure_category"),
    ("merchant_id_hash", lambda pan: {"merchant_id_hash": pan}, "merchant_id_hash"),
    (
        "payment_intent_id_hash",
        lambda pan: {"payment_intent_id_hash": pan},
        "payment_intent_id_hash",
    ),
    ("geo_bucket", lambda pan: {"geo_bucket": pan}, "geo_bucket"),
    ("channel", lambda pan: {"channel": pan}, "channel"),
    ("event_id", lambda pan: {"event_id": pan}, "event_id"),
    ("unknown-field", lambda pan: {"card_number": pan}, "card_number"),
]

SAD_KEYS = ["cvv", "CVC", "cvv2", "pin", "track2", "Track-2", "c_v_v", "security_code", "PIN"]


def with_overrides(**overrides: Any) -> dict[str, Any]:
    body = card_free_event()
    body.update(overrides)
    return body


async def post_raw(
    client: httpx.AsyncClient, raw: bytes | str, route: str = EVENTS
) -> httpx.Response:
    return await client.post(route, content=raw, headers=JSON_HEADERS)


# -- PANs in the body -----------------------------------------------------------------


@pytest.mark.parametrize(("place", "put", "field"), PLACES, ids=[p for p, _, _ in PLACES])
async def test_a_pan_in_any_field_is_refused_by_path_without_echo(
    client: httpx.AsyncClient, place: str, put: Any, field: str
) -> None:
    failures = Failures()
    for case, text, digits in PAN_TEXTS:
        with failures.case(case):
            body = with_overrides(**put(text))
            response = await post_raw(client, json.dumps(body, ensure_ascii=False).encode())
            problem = assert_problem(response, 422, "pan_detected")
            assert error_fields(problem) == {field}, problem
            assert_no_digits_of(digits, response)
    failures.check()
    assert await stored_ids(client) == []


async def test_a_pan_in_one_batch_item_refuses_the_batch_naming_the_item(
    client: httpx.AsyncClient,
) -> None:
    failures = Failures()
    for case, text, digits in PAN_TEXTS:
        with failures.case(case):
            events = [card_free_event() for _ in range(4)]
            events[2]["metadata"] = {"note": text}
            response = await post_raw(client, json.dumps({"events": events}, ensure_ascii=False))
            problem = assert_problem(response, 422, "pan_detected")
            assert error_fields(problem) == {"events[2].metadata.note"}
            assert_no_digits_of(digits, response)
    failures.check()
    assert await stored_ids(client) == []


async def test_a_pan_on_the_payment_exhaust_route_is_refused(client: httpx.AsyncClient) -> None:
    response = await post_raw(client, json.dumps(with_overrides(channel=VISA)), EXHAUST)

    problem = assert_problem(response, 422, "pan_detected")
    assert error_fields(problem) == {"channel"}
    assert_no_digits_of(VISA, response)
    assert await stored_ids(client) == []


async def test_every_field_holding_a_pan_is_named(client: httpx.AsyncClient) -> None:
    body = with_overrides(event_type=AMEX, geo_bucket=VISA, metadata={"a": "ok", "b": MASTERCARD})

    response = await post_raw(client, json.dumps(body))

    problem = assert_problem(response, 422, "pan_detected")
    assert error_fields(problem) == {"event_type", "geo_bucket", "metadata.b"}
    for digits in (AMEX, VISA, MASTERCARD):
        assert_no_digits_of(digits, response)


async def test_a_json_escaped_pan_is_caught(client: httpx.AsyncClient) -> None:
    escaped = "".join(f"\\u{ord(c):04x}" for c in "4111 1111 1111 1111")
    raw = json.dumps(with_overrides(metadata={"note": "PLACEHOLDER"})).replace(
        "PLACEHOLDER", escaped
    )
    assert "4111" not in raw

    response = await post_raw(client, raw)

    problem = assert_problem(response, 422, "pan_detected")
    assert error_fields(problem) == {"metadata.note"}
    assert_no_digits_of(VISA, response)
    assert await stored_ids(client) == []


async def test_a_json_escaped_pan_in_a_key_is_caught(client: httpx.AsyncClient) -> None:
    escaped = "".join(f"\\u{ord(c):04x}" for c in VISA)
    raw = json.dumps(with_overrides(metadata={"PLACEHOLDER": "x"})).replace("PLACEHOLDER", escaped)

    response = await post_raw(client, raw)

    problem = assert_problem(response, 422, "pan_detected")
    assert error_fields(problem) == {"metadata.<key>"}
    assert_no_digits_of(VISA, response)


async def test_a_pan_sent_as_a_json_number_is_caught(client: httpx.AsyncClient) -> None:
    failures = Failures()
    for number in ("4111111111111111", "4111111111111111.0", "4.111111111111111e15"):
        with failures.case(number):
            raw = json.dumps(with_overrides(amount=0)).replace('"amount": 0', f'"amount": {number}')
            response = await post_raw(client, raw)
            problem = assert_problem(response, 422, "pan_detected")
            assert error_fields(problem) == {"amount"}
            assert_no_digits_of(VISA, response)
    failures.check()
    assert await stored_ids(client) == []


async def test_an_unparseable_body_holding_a_pan_is_refused_without_echo(
    client: httpx.AsyncClient,
) -> None:
    response = await post_raw(client, f'{{"metadata": {{"note": "{VISA}"')

    assert_problem(response, 422, "pan_detected")
    assert_no_digits_of(VISA, response)


async def test_numbers_that_are_not_pans_are_accepted(client: httpx.AsyncClient) -> None:
    failures = Failures()
    accepted = []
    for text in (
        "4111111111111112",  # 16 digits, Luhn fails
        "4111 1111 1111 1112",
        "123456789012345678901",  # 21 digits without separators: some other number
        "order 12345678",  # too short
        "4111--1111--1111--1111",  # doubled separators end each run
    ):
        with failures.case(text):
            body = with_overrides(metadata={"ref": text})
            response = await post_raw(client, json.dumps(body))
            assert response.status_code == 202, response.text
            accepted.append(body["event_id"])
    failures.check()
    assert await stored_ids(client) == accepted


# -- sensitive authentication data --------------------------------------------------------


async def test_a_sensitive_key_in_metadata_is_refused(client: httpx.AsyncClient) -> None:
    failures = Failures()
    for key in SAD_KEYS:
        with failures.case(key):
            response = await post_raw(client, json.dumps(with_overrides(metadata={key: "123"})))
            problem = assert_problem(response, 422, "sensitive_authentication_data")
            assert len(problem["errors"]) == 1
            assert problem["errors"][0]["field"] in {f"metadata.{key}", "metadata.<key>"}
            assert "123" not in json.dumps(problem["errors"])
    failures.check()
    assert await stored_ids(client) == []


async def test_a_sensitive_key_at_the_top_level_is_refused(client: httpx.AsyncClient) -> None:
    failures = Failures()
    for key in SAD_KEYS:
        with failures.case(key):
            response = await post_raw(client, json.dumps(with_overrides(**{key: "x"})))
            problem = assert_problem(response, 422, "sensitive_authentication_data")
            assert error_fields(problem) <= {key, "<key>"}
    failures.check()
    assert await stored_ids(client) == []


async def test_a_sensitive_key_in_a_batch_item_refuses_the_batch(
    client: httpx.AsyncClient,
) -> None:
    for key in ("cvv", "pin", "track2"):
        events = [card_free_event() for _ in range(3)]
        events[1]["metadata"] = {"note": "fine", key: "x"}

        response = await post_raw(client, json.dumps({"events": events}))

        problem = assert_problem(response, 422, "sensitive_authentication_data")
        assert error_fields(problem) == {f"events[1].metadata.{key}"}
    assert await stored_ids(client) == []


async def test_a_sensitive_key_beside_the_events_list_is_refused(client: httpx.AsyncClient) -> None:
    response = await post_raw(client, json.dumps({"events": [card_free_event()], "cvc": "x"}))

    assert_problem(response, 422, "sensitive_authentication_data")
    assert await stored_ids(client) == []


async def test_a_sensitive_key_on_the_payment_exhaust_route_is_refused(
    client: httpx.AsyncClient,
) -> None:
    response = await post_raw(client, json.dumps(with_overrides(cvv2="x")), EXHAUST)

    problem = assert_problem(response, 422, "sensitive_authentication_data")
    assert error_fields(problem) == {"cvv2"}
    assert await stored_ids(client) == []


async def test_a_json_escaped_sensitive_key_is_caught(client: httpx.AsyncClient) -> None:
    raw = json.dumps(with_overrides(metadata={"PLACEHOLDER": "x"})).replace(
        "PLACEHOLDER", "\\u0063\\u0076\\u0076"
    )

    response = await post_raw(client, raw)

    assert_problem(response, 422, "sensitive_authentication_data")
    assert await stored_ids(client) == []


async def test_sensitive_data_outranks_a_pan_in_the_same_request(client: httpx.AsyncClient) -> None:
    body = with_overrides(metadata={"cvv": "123", "note": VISA})

    response = await post_raw(client, json.dumps(body))

    problem = assert_problem(response, 422, "sensitive_authentication_data")
    assert error_fields(problem) == {"metadata.cvv"}
    assert_no_digits_of(VISA, response)


# -- PANs outside the body ------------------------------------------------------------------

URL_PANS = [VISA, "4111-1111-1111-1111", "4111 1111 1111 1111", f"cards.{AMEX}"]


def _digits(text: str) -> str:
    return AMEX if AMEX in text else VISA


async def test_a_pan_in_a_topic_name_is_refused_without_echo(client: httpx.AsyncClient) -> None:
    failures = Failures()
    for topic in URL_PANS:
        calls = [
            ("GET", f"/v1/streams/{topic}", None),
            ("GET", f"/v1/streams/{topic}/dead-letters", None),
            ("POST", f"/v1/streams/{topic}/groups/g1/read", {"consumer": "c1"}),
        ]
        for method, path, body in calls:
            with failures.case(f"{method} {path}"):
                response = await client.request(method, path, json=body, headers=AUTH)
                problem = assert_problem(response, 422, "pan_detected")
                assert error_fields(problem) == {"path"}
                assert_no_digits_of(_digits(topic), response)
    failures.check()


async def test_a_pan_as_a_consumer_group_name_is_refused(client: httpx.AsyncClient) -> None:
    failures = Failures()
    for action, payload in (("read", {"consumer": "c1"}), ("ack", {"offsets": [0]})):
        with failures.case(action):
            response = await client.post(
                f"{TOKENIZED_URL}/groups/{VISA}/{action}", json=payload, headers=AUTH
            )
            assert_problem(response, 422, "pan_detected")
            assert_no_digits_of(VISA, response)
    failures.check()


async def test_a_pan_as_a_consumer_name_is_refused(client: httpx.AsyncClient) -> None:
    await post_raw(client, json.dumps(card_free_event()))

    response = await client.post(
        f"{TOKENIZED_URL}/groups/g1/read", json={"consumer": VISA}, headers=AUTH
    )

    problem = assert_problem(response, 422, "pan_detected")
    assert error_fields(problem) == {"consumer"}
    assert_no_digits_of(VISA, response)


async def test_a_pan_in_a_query_parameter_is_refused_without_echo(
    client: httpx.AsyncClient,
) -> None:
    failures = Failures()
    for path, query, value in [
        (TOKENIZED_URL, "limit", VISA),
        (TOKENIZED_URL, "after", "4111-1111-1111-1111"),
        (f"{TOKENIZED_URL}/dead-letters", "group", VISA),
        (TOKENIZED_URL, "note", VISA),
    ]:
        with failures.case(f"{path}?{query}"):
            response = await client.get(path, params={query: value}, headers=AUTH)
            problem = assert_problem(response, 422, "pan_detected")
            assert error_fields(problem) == {"query"}
            assert_no_digits_of(VISA, response)
    failures.check()


@pytest.mark.parametrize(
    "query",
    [
        "note=4111%201111%201111%201111",
        "note=4111+1111+1111+1111",
        "n%6Fte=4111%2D1111%2D1111%2D1111",
    ],
    ids=["percent-encoded-spaces", "form-encoded-spaces", "percent-encoded-dashes"],
)
@pytest.mark.parametrize("path", ["/health", TOKENIZED_URL])
async def test_a_pan_in_an_encoded_query_is_refused(
    client: httpx.AsyncClient, path: str, query: str
) -> None:
    # In a query string "+" is a space (application/x-www-form-urlencoded), which is how
    # browsers and httpx send "4111 1111 1111 1111".
    response = await client.get(f"{path}?{query}", headers=AUTH)

    problem = assert_problem(response, 422, "pan_detected")
    assert error_fields(problem) == {"query"}
    assert_no_digits_of(VISA, response)


async def test_a_pan_in_an_unknown_path_is_refused_without_echo(
    client: httpx.AsyncClient,
) -> None:
    for path in (f"/v1/cards/{VISA}", f"/cards/{VISA}", "/v1/cards/4111%201111%201111%201111"):
        response = await client.get(path, headers=AUTH)

        assert_problem(response, 422, "pan_detected")
        assert_no_digits_of(VISA, response)


async def test_a_pan_in_a_credential_or_request_id_is_not_echoed(
    client: httpx.AsyncClient,
) -> None:
    credential = await client.get(TOKENIZED_URL, headers={"Authorization": f"Bearer {VISA}"})
    request_id = await client.get("/health", headers={"X-Request-ID": "4111-1111-1111-1111"})

    assert_problem(credential, 401)
    assert request_id.status_code == 200
    for response in (credential, request_id):
        assert_no_digits_of(VISA, response)
