"""Tests for strongroom.domain.event_fast_path: never looser than pydantic.

Whatever the fast decoder accepts, pydantic accepts too, with the same ids and
the same stored bytes; everything else it hands back to pydantic. The
generated bodies mix valid events with every kind of near miss.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from strongroom.domain import event_fast_path
from strongroom.domain.event_fast_path import FastEvent, decode_batch, decode_event
from strongroom.domain.events import (
    PaymentEvent,
    event_ids,
    validate_batch_json,
    validate_event_json,
)
from support import event, smallest_event

_TO_JSON = PaymentEvent.__pydantic_serializer__.to_json

_TEXT = st.text(
    alphabet=st.sampled_from(
        ["a", "Z", "0", "9", "-", "_", ".", " ", '"', "\\", "\n", "\x7f", "é", "カ", "😀", "\x85"]
    ),
    max_size=70,
)
_TIMESTAMPS = st.one_of(
    _TEXT,
    st.sampled_from(
        [
            "2026-11-22T10:00:00Z",
            "2026-11-22t10:00:00z",
            "2026-11-22 10:00:00Z",
            "2026-11-22T10:00:00.1Z",
            "2026-11-22T10:00:00.000Z",
            "2026-11-22T10:00:00.000000Z",
            "2026-11-22T10:00:00.1234565Z",
            "2026-11-22T10:00:00.999999999Z",
            "2026-11-22T10:00:00,5Z",
            "2026-11-22T10:00:00+02:00",
            "2026-11-22T10:00:00+0200",
            "2026-11-22T10:00:00-00:00",
            "2026-11-22T10:00:00+00:00",
            "2026-11-22T10:00Z",
            "2026-11-22T10:00:00",
            "2026-02-30T10:00:00Z",
            "2026-11-22T24:00:00Z",
            "2026-11-22T23:59:60Z",
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59-01:00",
            "2026-11-22",
            "",
        ]
    ),
    st.integers(0, 2**40),
)
_IDS = st.one_of(
    st.uuids().map(str),
    st.uuids().map(lambda u: str(u).upper()),
    st.uuids().map(lambda u: u.hex),
    st.uuids().map(lambda u: "{" + str(u) + "}"),
    st.uuids().map(lambda u: "urn:uuid:" + str(u)),
    st.just("0f8fad5b-d9cb-469f-a165-70867728950"),
)
_VALUE = st.one_of(
    _TEXT, st.integers(-2, 2**64), st.none(), st.booleans(), st.floats(allow_nan=False)
)
_PLAIN_TEXT_CHARACTERS = st.sampled_from(["a", "Z", "0", "-", "_", ".", " ", "é", "カ", "😀"])
_PLAIN_TEXT = st.text(_PLAIN_TEXT_CHARACTERS, max_size=70)
_NOT_TEXT = frozenset(
    {"event_id", "event_timestamp", "processor", "retry_count", "amount", "currency"}
    | {"metadata", "card", "signature"}
)
#: The bounded text fields (labels and hashes).
_LABELS = [name for name in PaymentEvent.model_fields if name not in _NOT_TEXT]


_VALID_TIMESTAMPS = st.sampled_from(
    [
        "2026-11-22T10:00:00Z",
        "2026-11-22t10:00:00z",
        "2026-11-22 10:00:00.5+01:00",
        "2026-11-22T10:00:00.1234565Z",
        "2026-11-22T10:00:00.000-00:00",
    ]
)
_VALID = {
    "event_id": st.one_of(st.uuids().map(str), st.uuids().map(lambda u: u.hex.upper())),
    "event_timestamp": _VALID_TIMESTAMPS,
    "processor": st.from_regex(r"\A[a-z0-9][a-z0-9_.-]{0,63}\Z"),
    "retry_count": st.integers(0, 100),
    "amount": st.one_of(st.integers(0, 10**15), st.none()),
    "currency": st.one_of(st.from_regex(r"\A[A-Z]{3}\Z"), st.none()),
    "metadata": st.one_of(
        st.dictionaries(
            st.text(_PLAIN_TEXT_CHARACTERS, min_size=1, max_size=64),
            st.text(_PLAIN_TEXT_CHARACTERS, max_size=256),
            max_size=20,
        ),
        st.none(),
    ),
    **dict.fromkeys(
        _LABELS, st.one_of(st.text(_PLAIN_TEXT_CHARACTERS, min_size=1, max_size=64), st.none())
    ),
}
_ANY = {
    "event_id": _IDS,
    "event_timestamp": _TIMESTAMPS,
    "processor": st.one_of(st.sampled_from(["Stripe", "a" * 65, ""]), _TEXT),
    "retry_count": st.one_of(st.integers(-1, 101), _VALUE),
    "amount": st.one_of(st.integers(-1, 10**15 + 1), _VALUE),
    "currency": st.one_of(st.sampled_from(["eur", "EURO"]), _VALUE),
    "metadata": st.one_of(
        st.dictionaries(st.one_of(_PLAIN_TEXT, _TEXT), _VALUE, max_size=22), _VALUE
    ),
    **dict.fromkeys(_LABELS, st.one_of(_PLAIN_TEXT, _VALUE)),
}


@st.composite
def _event(draw: st.DrawFn) -> dict[str, Any]:
    """Half the time an event of valid values only (which the fast path should
    mostly take); else any field may be anything, and fields may be added or gone."""
    body = event() if draw(st.booleans()) else smallest_event()
    valid = draw(st.booleans())
    fields = draw(st.lists(st.sampled_from(sorted(_VALID)), max_size=6, unique=True))
    for field in fields:
        body[field] = draw((_VALID if valid else _ANY)[field])
    if valid:
        return body
    extra = draw(st.sampled_from([None, "card", "signature", "unexpected", "missing"]))
    if extra == "card":
        body["card"] = {"token": "tok_123"}
    elif extra == "signature":
        body["signature"] = "abc"
    elif extra == "unexpected":
        body["unexpected"] = 1
    elif extra == "missing":
        del body[draw(st.sampled_from(sorted(body)))]
    return body


def _assert_same_as_pydantic(fast: list[FastEvent], pydantic: list[PaymentEvent]) -> None:
    assert event_fast_path.event_ids(fast) == event_ids(pydantic)
    assert [event_fast_path.to_json(e) for e in fast] == [
        _TO_JSON(e, exclude_none=True) for e in pydantic
    ]
    assert [e.partition_key for e in fast] == [e.partition_key for e in pydantic]
    assert [e.metadata for e in fast] == [e.metadata for e in pydantic]
    assert not any(e.needs_vault for e in fast)


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(_event(), min_size=1, max_size=4), ascii_only=st.booleans())
def test_what_the_fast_path_accepts_pydantic_accepts_alike(
    batch: list[dict[str, Any]], ascii_only: bool
) -> None:
    batch_body = json.dumps({"events": batch}, ensure_ascii=ascii_only).encode()
    fast_batch = decode_batch(batch_body)
    if fast_batch is not None:
        _assert_same_as_pydantic(fast_batch, validate_batch_json(batch_body))
    one_body = json.dumps(batch[0], ensure_ascii=ascii_only).encode()
    fast_one = decode_event(one_body)
    if fast_one is not None:
        _assert_same_as_pydantic([fast_one], [validate_event_json(one_body)])


def test_the_fast_event_has_payment_events_fields_in_order_but_card_and_signature() -> None:
    expected = [name for name in PaymentEvent.model_fields if name not in ("card", "signature")]
    assert list(FastEvent.__struct_fields__) == expected


def test_common_bodies_take_the_fast_path() -> None:
    body = json.dumps({"events": [event() for _ in range(100)]}).encode()
    fast = decode_batch(body)
    assert fast is not None
    assert len(fast) == 100
    _assert_same_as_pydantic(fast, validate_batch_json(body))
    one = json.dumps(
        smallest_event(amount=1250, currency="EUR", metadata={"order": "A-17", "note": ""})
    ).encode()
    fast_one = decode_event(one)
    assert fast_one is not None
    _assert_same_as_pydantic([fast_one], [validate_event_json(one)])


@pytest.mark.parametrize(
    ("timestamp", "stored"),
    [
        ("2026-11-22T10:00:00.1234565Z", "2026-11-22T10:00:00.123456Z"),  # truncated, not rounded
        ("2026-11-22T10:00:00.999999999Z", "2026-11-22T10:00:00.999999Z"),
        ("2026-11-22T10:00:00.000Z", "2026-11-22T10:00:00Z"),
        ("2026-11-22 10:00:00+00:00", "2026-11-22T10:00:00Z"),
        ("2026-11-22T10:00:00+0200", "2026-11-22T10:00:00+02:00"),
    ],
)
def test_timestamps_are_stored_as_pydantic_writes_them(timestamp: str, stored: str) -> None:
    body = json.dumps(smallest_event(event_timestamp=timestamp)).encode()
    fast = decode_event(body)
    assert fast is not None
    assert json.loads(event_fast_path.to_json(fast))["event_timestamp"] == stored
    _assert_same_as_pydantic([fast], [validate_event_json(body)])


@pytest.mark.parametrize(
    "fields",
    [
        {"card": {"token": "tok_123"}},
        {"signature": "abc"},
        {"event_type": "payment\\u002efailed"},  # an escape: the body is not plain
        {"event_type": "pay\x7fment"},  # a raw DEL, which the patterns refuse
        {"processor": "Stripe"},
        {"currency": "eur"},
        {"event_timestamp": "2026-02-30T10:00:00Z"},
        {"event_timestamp": "2026-11-22T10:00:00"},
        {"retry_count": 1.0},
        {"unexpected": 1},
    ],
)
def test_anything_else_is_left_to_pydantic(fields: dict[str, Any]) -> None:
    text = json.dumps(smallest_event(**fields), ensure_ascii=False)
    body = text.replace("\\\\u002e", "\\u002e").encode()
    assert decode_event(body) is None
    assert decode_batch(b'{"events": [' + body + b"]}") is None


def test_a_refused_body_is_still_refused_by_pydantic_with_every_error() -> None:
    body = json.dumps(
        {"events": [smallest_event(retry_count=-1), smallest_event(processor="Stripe")]}
    ).encode()
    assert decode_batch(body) is None
    with pytest.raises(ValidationError) as refused:
        validate_batch_json(body)
    assert {error["loc"][:2] for error in refused.value.errors()} == {("events", 0), ("events", 1)}


@pytest.mark.parametrize(
    "body",
    [
        # A key sent twice: both decoders keep the last value.
        b'{"event_id":"0f8fad5b-d9cb-469f-a165-70867728950e","event_type":"a","event_type":"b",'
        b'"event_timestamp":"2026-11-22T10:00:00Z","processor":"stripe"}',
        b'{"event_id":"0f8fad5b-d9cb-469f-a165-70867728950e","event_type":"a",'
        b'"event_timestamp":"2026-11-22T10:00:00Z","processor":"stripe",'
        b'"metadata":{"k":"1","k":"2"}}',
    ],
)
def test_a_repeated_key_means_what_pydantic_makes_of_it(body: bytes) -> None:
    fast = decode_event(body)
    assert fast is not None
    _assert_same_as_pydantic([fast], [validate_event_json(body)])
    batch = b'{"events":[' + body + b"]}"
    fast_batch = decode_batch(batch)
    assert fast_batch is not None
    _assert_same_as_pydantic(fast_batch, validate_batch_json(batch))


def test_a_repeated_events_key_means_what_pydantic_makes_of_it() -> None:
    first, second = json.dumps(smallest_event()), json.dumps(event())
    body = ('{"events":[' + first + '],"events":[' + second + "]}").encode()
    fast = decode_batch(body)
    assert fast is not None
    _assert_same_as_pydantic(fast, validate_batch_json(body))
