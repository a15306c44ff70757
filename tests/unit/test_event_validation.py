"""Tests for strongroom.domain.events: the two ways a body is validated agree.

A body that cannot hold a control character in any string (no backslash, no
raw DEL) is validated by models without the control-character patterns; every
other body by the models with them. These tests hold the two in step: the same
schema but for those patterns, and the same verdict on every plain body.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from strongroom.domain import events
from strongroom.domain.events import (
    EventBatch,
    PaymentEvent,
    event_ids,
    validate_batch_json,
    validate_event_json,
)
from support import smallest_event

CONTROL_PATTERNS = {r"^[^\x00-\x1f\x7f]*$", r"^[^\x00]*$"}


def _without_control_patterns(node: Any) -> Any:
    """A JSON schema without the control-character patterns, titles, descriptions
    and the plain models' name prefix."""
    if isinstance(node, dict):
        patterned = node.get("patternProperties", {})
        if len(patterned) == 1 and next(iter(patterned)) in CONTROL_PATTERNS:
            # A key pattern shows as patternProperties; without it, additionalProperties.
            node = {k: v for k, v in node.items() if k != "patternProperties"}
            node["additionalProperties"] = next(iter(patterned.values()))
        return {
            key: _without_control_patterns(value)
            for key, value in node.items()
            if key not in ("title", "description")
            and not (key == "pattern" and value in CONTROL_PATTERNS)
        }
    if isinstance(node, list):
        return [_without_control_patterns(item) for item in node]
    if isinstance(node, str):
        return node.replace("_Plain", "")
    return node


def _schema(model: type[BaseModel]) -> Any:
    schema = model.model_json_schema()
    schema["$defs"] = {
        name.replace("_Plain", ""): body for name, body in schema.get("$defs", {}).items()
    }
    return _without_control_patterns(schema)


@pytest.mark.parametrize(
    ("checked", "plain"),
    [
        (PaymentEvent, events._PlainPaymentEvent),
        (EventBatch, events._PlainEventBatch),
        (events.EventCard, events._PlainEventCard),
    ],
)
def test_the_plain_models_differ_only_by_the_control_character_patterns(
    checked: type[BaseModel], plain: type[BaseModel]
) -> None:
    assert _schema(plain) == _schema(checked)
    # And the checked models really do carry the patterns the plain ones drop.
    assert json.dumps(checked.model_json_schema()).count("pattern") > json.dumps(
        plain.model_json_schema()
    ).count("pattern")


def _verdict(adapter: Any, body: bytes) -> tuple[str, Any]:
    try:
        validated = adapter.validate_json(body)
    except ValidationError as exc:
        return "refused", exc.errors(include_url=False, include_context=False)
    return "accepted", validated.model_dump(mode="json")


# Strings from every corner that matters: control characters, DEL, quotes and
# backslashes (which JSON escapes), non-ASCII letters and digits.
_TEXT = st.text(
    alphabet=st.sampled_from(
        ["a", "Z", "0", "-", " ", '"', "\\", "\n", "\t", "\x00", "\x1f", "\x7f", "é", "カ", "\x85"]
    ),
    max_size=6,
)
_VALUE = st.one_of(_TEXT, st.integers(-1, 200), st.none(), st.booleans())
_FIELDS = [
    "event_type",
    "processor",
    "merchant_id_hash",
    "failure_category",
    "channel",
    "currency",
    "retry_count",
    "signature",
]


@st.composite
def _event(draw: st.DrawFn) -> dict[str, Any]:
    event = smallest_event()
    for field in draw(st.lists(st.sampled_from(_FIELDS), max_size=3, unique=True)):
        event[field] = draw(_VALUE)
    if draw(st.booleans()):
        event["metadata"] = draw(st.dictionaries(_TEXT, _VALUE, max_size=3))
    if draw(st.booleans()):
        event["card"] = {"token": draw(_TEXT)}
    return event


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    batch=st.lists(_event(), min_size=1, max_size=3),
    ascii_only=st.booleans(),
)
def test_plain_bodies_get_the_same_verdict_from_both_validations(
    batch: list[dict[str, Any]], ascii_only: bool
) -> None:
    for body in (
        json.dumps({"events": batch}, ensure_ascii=ascii_only).encode(),
        json.dumps(batch[0], ensure_ascii=ascii_only).encode(),
    ):
        is_batch = events.is_batch_body(body)
        checked = events._BATCH if is_batch else events._SINGLE_EVENT
        plain = events._PLAIN_BATCH if is_batch else events._PLAIN_SINGLE_EVENT
        expected = _verdict(checked, body)
        if events.has_plain_strings(body):
            assert _verdict(plain, body) == expected
        public = validate_batch_json if is_batch else validate_event_json
        try:
            result = public(body)
        except ValidationError as exc:
            outcome = ("refused", exc.errors(include_url=False, include_context=False))
        else:
            dumped = (
                {"events": [event.model_dump(mode="json") for event in result]}
                if isinstance(result, list)
                else result.model_dump(mode="json")
            )
            outcome = ("accepted", dumped)
        assert outcome == expected


@pytest.mark.parametrize(
    ("value", "plain"),
    [
        ("pay\x7fment", True),  # DEL needs no escape in JSON: it is sent raw
        ("pay\\u007fment", False),
        ("pay\\nment", False),
        ("pay\\u0000ment", False),
    ],
)
def test_a_control_character_is_refused_however_it_is_spelled(value: str, plain: bool) -> None:
    body = (
        '{"event_id": "0f8fad5b-d9cb-469f-a165-70867728950e", "event_type": "' + value + '", '
        '"event_timestamp": "2026-11-22T10:00:00Z", "processor": "stripe"}'
    ).encode()
    assert events.has_plain_strings(body) is False  # never the plain models
    assert (b"\\" not in body) is plain
    with pytest.raises(ValidationError) as refused:
        validate_event_json(body)
    assert [error["loc"] for error in refused.value.errors()] == [("event_type",)]


def test_a_raw_control_character_is_refused_by_the_json_parser() -> None:
    body = (
        b'{"event_id": "0f8fad5b-d9cb-469f-a165-70867728950e", "event_type": "pay\x01ment", '
        b'"event_timestamp": "2026-11-22T10:00:00Z", "processor": "stripe"}'
    )
    assert events.has_plain_strings(body)
    with pytest.raises(ValidationError) as refused:
        validate_event_json(body)
    assert refused.value.errors()[0]["type"] == "json_invalid"


def test_validated_events_are_payment_events_that_serialise_alike() -> None:
    event = {
        "event_id": "0F8FAD5B-D9CB-469F-A165-70867728950E",
        "event_type": "paiement.échoué",
        "event_timestamp": "2026-11-22T10:00:00+01:00",
        "processor": "stripe",
        "metadata": {"note": "line"},
    }
    plain = json.dumps(event, ensure_ascii=False).encode()
    escaped = json.dumps(event).encode()
    assert events.has_plain_strings(plain)
    assert not events.has_plain_strings(escaped)
    from_plain, from_escaped = validate_event_json(plain), validate_event_json(escaped)
    assert isinstance(from_plain, PaymentEvent)
    serialise = PaymentEvent.__pydantic_serializer__.to_json
    assert serialise(from_plain) == serialise(from_escaped)
    assert str(from_plain.event_id) == "0f8fad5b-d9cb-469f-a165-70867728950e"


@settings(max_examples=200)
@given(
    ids=st.lists(st.uuids(), min_size=1, max_size=5),
    spelling=st.sampled_from(["canonical", "upper", "hex", "urn"]),
)
def test_event_ids_are_the_canonical_text_of_each_id_however_it_was_sent(
    ids: list[Any], spelling: str
) -> None:
    spell = {
        "canonical": str,
        "upper": lambda value: str(value).upper(),
        "hex": lambda value: value.hex,
        "urn": lambda value: value.urn,
    }[spelling]
    body = json.dumps(
        {
            "events": [
                {
                    "event_id": spell(value),
                    "event_type": "payment.failed",
                    "event_timestamp": "2026-11-22T10:00:00Z",
                    "processor": "stripe",
                }
                for value in ids
            ]
        }
    ).encode()

    assert event_ids(validate_batch_json(body)) == [str(value) for value in ids]
