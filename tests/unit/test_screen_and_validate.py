"""Tests for strongroom.services.screening.screen_and_validate on event bodies.

It may leave part of the screen until validation has passed (see its
docstring). These tests hold it to the plain order, the whole screen and then
validation: on every body, the same refusal or the same events.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from strongroom.domain.events import PaymentEvent, validate_batch_json, validate_event_json
from strongroom.errors import CardDataRefused, InvalidRequest
from strongroom.services.ingest import CARD_FIELDS, metadata_keys
from strongroom.services.screening import screen, screen_and_validate
from support import smallest_event

VISA = "4111111111111111"
#: Stands for a number in exponent form, which ``json.dumps`` never writes.
EXPONENT = "@exponent@"
EXPONENT_LITERAL = "4.111111111111111e15"

_TEXT = st.one_of(
    st.sampled_from(
        [
            VISA,
            "4111 1111 1111 1111",
            "card 5555-5555-5555-4444 declined",
            "4111111111111112",
            "2026-11-22T10:00:00Z",
            "order 12345678",
            "caf\u00e9",
            "line\nbreak",
            "",
        ]
    ),
    st.text(alphabet="ab0123 -_", max_size=8),
)
_KEY = st.one_of(
    st.sampled_from(["note", "cvv", "CVC", "Track-2", "pin", "security_code", VISA, "ref"]),
    st.text(alphabet="abcvpin_-0", min_size=1, max_size=6),
)
_VALUE = st.one_of(
    _TEXT,
    st.integers(-5, 200),
    st.sampled_from([int(VISA), 4111111111111111.0, EXPONENT, None, True]),
)
_FIELDS = ["event_type", "merchant_id_hash", "channel", "retry_count", "amount", "currency"]


@st.composite
def _event(draw: st.DrawFn) -> dict[str, Any]:
    event = smallest_event()
    for field in draw(st.lists(st.sampled_from(_FIELDS), max_size=2, unique=True)):
        event[field] = draw(_VALUE)
    if draw(st.booleans()):
        event["metadata"] = draw(st.dictionaries(_KEY, _TEXT, max_size=3))
    if draw(st.integers(0, 4)) == 0:
        event[draw(_KEY)] = draw(_VALUE)
    if draw(st.integers(0, 4)) == 0:
        event["card"] = draw(
            st.sampled_from(
                [
                    {"number": VISA, "exp_month": 12, "exp_year": 2030},
                    {"token": "tok_abc"},
                    {"number": VISA, "cvv": "123"},
                ]
            )
        )
    return event


def _outcome(
    parse: Callable[..., list[PaymentEvent]], *args: Any, **kwargs: Any
) -> tuple[Any, ...]:
    try:
        parsed = parse(*args, **kwargs)
    except CardDataRefused as exc:
        return ("card data", exc.code, exc.errors)
    except InvalidRequest as exc:
        return ("invalid", exc.detail, exc.errors)
    except ValidationError as exc:
        return ("validation", exc.errors(include_url=False, include_input=False))
    return ("accepted", [event.model_dump(mode="json") for event in parsed])


def _reference(body: bytes, validate: Callable[[bytes], list[PaymentEvent]]) -> list[PaymentEvent]:
    screen(body, card_fields=CARD_FIELDS)
    return validate(body)


def _one(body: bytes) -> list[PaymentEvent]:
    return [validate_event_json(body)]


def _bodies(batch: list[dict[str, Any]], ascii_only: bool) -> list[bytes]:
    texts = [
        json.dumps({"events": batch}, ensure_ascii=ascii_only),
        json.dumps(batch[0], ensure_ascii=ascii_only),
        json.dumps({"events": batch}, separators=(",", ":")),
    ]
    return [text.replace(f'"{EXPONENT}"', EXPONENT_LITERAL).encode() for text in texts]


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(_event(), min_size=1, max_size=3), ascii_only=st.booleans())
def test_the_outcome_is_that_of_the_whole_screen_before_validation(
    batch: list[dict[str, Any]], ascii_only: bool
) -> None:
    for body in _bodies(batch, ascii_only):
        validate = validate_batch_json if body.startswith(b'{"events"') else _one
        expected = _outcome(_reference, body, validate)
        assert (
            _outcome(screen_and_validate, body, validate, metadata_keys, card_fields=CARD_FIELDS)
            == expected
        )


@pytest.mark.parametrize(
    ("metadata", "other", "field"),
    [
        ({"cvv": "1"}, {}, "metadata.cvv"),
        ({"note": "x", "Track-2": "1"}, {"retry_count": 500}, "metadata.<key>"),
        ({"pin": "1"}, {"unknown": 1}, "metadata.pin"),
    ],
)
def test_a_sensitive_metadata_key_is_refused_as_such_in_valid_and_invalid_events(
    metadata: dict[str, str], other: dict[str, Any], field: str
) -> None:
    event = smallest_event(metadata=metadata, **other)
    with pytest.raises(CardDataRefused) as refused:
        screen_and_validate(
            json.dumps(event).encode(), _one, metadata_keys, card_fields=CARD_FIELDS
        )
    assert refused.value.code == "sensitive_authentication_data"
    assert [error.field for error in refused.value.errors] == [field]


def test_a_pan_in_exponent_form_is_refused_as_a_pan_not_as_a_float() -> None:
    body = (
        b'{"event_id":"0f8fad5b-d9cb-469f-a165-70867728950e","event_type":"x",'
        b'"event_timestamp":"2026-11-22T10:00:00Z","processor":"s","amount":'
        + EXPONENT_LITERAL.encode()
        + b"}"
    )
    with pytest.raises(CardDataRefused) as refused:
        screen_and_validate(body, _one, metadata_keys, card_fields=CARD_FIELDS)
    assert refused.value.code == "pan_detected"
