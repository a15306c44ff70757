"""The log redaction processor: its shortcut for plain events changes nothing it would mask;
and the timestamp every line gets.

``redact`` decides most events with one scan of all their strings joined; the
property tests hold it to what redacting value by value gives, on events built
to sit at the edges: card numbers in every shape, digit runs one short of a
card number, full-width digits, secret shapes and large integers.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.domain.cards import find_pan_spans, may_contain_pan
from strongroom.observability.logging import add_timestamp, redact, redact_value

VISA = "4242424242424242"
SECRET_KEYS = ("authorization", "Token", "secret")


def _one_by_one(event: dict[str, Any]) -> dict[str, Any]:
    return {
        key: "[SECRET REDACTED]"
        if key.lower() in {"authorization", "token", "secret"}
        else redact_value(value)
        for key, value in event.items()
    }


pieces = st.sampled_from(
    [
        VISA,
        "4242 4242 4242 4242",
        "4242-4242-4242-4242",
        "４２４２４２４２４２４２４２４２",  # full-width digits
        "424242424242",  # 12 digits: one short
        "5555555555554444",
        "Bearer abc.def",
        "sr_live_ABCDEFGH12345678",
        "\u017fr_live_ABCDEFGH12345678",  # a long s, which IGNORECASE matches as "s"
        "whsec_c2VjcmV0c2VjcmV0",
        "f47ac10b-58cc-4372-a567-0e02b2c3d479",
        "POST",
        "/v1/events",
        "-",
        " ",
        "\n",
        "",
    ]
)
texts = st.lists(pieces | st.text(max_size=12), max_size=5).map("".join)
values = (
    texts
    | st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=False)
    | st.lists(texts, max_size=2)
    | st.dictionaries(st.text(max_size=4), texts, max_size=2)
)
events = st.dictionaries(
    st.sampled_from(["event", "route", "request_id", "key_id", "status", "detail", *SECRET_KEYS]),
    values,
    max_size=7,
)


# Full-width digits make the first examples pay for NFKC tables: no per-example deadline.
@settings(max_examples=300, deadline=None)
@given(events)
def test_redact_matches_redacting_every_value_on_its_own(event: dict[str, Any]) -> None:
    assert redact(None, "info", dict(event)) == _one_by_one(event)


@settings(max_examples=300, deadline=None)
@given(st.lists(texts, max_size=6))
def test_joined_texts_pass_the_prefilter_only_when_no_part_holds_a_pan(parts: list[str]) -> None:
    if any(find_pan_spans(part) for part in parts):
        assert may_contain_pan("\n".join(parts))


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (f"card {VISA} declined", "card [PAN REDACTED] declined"),
        ("token Bearer abc.def", "token Bearer [SECRET REDACTED]"),
        (int(VISA), "[PAN REDACTED]"),
    ],
)
def test_a_plain_looking_event_with_one_bad_value_is_masked_there_only(
    value: object, shown: str
) -> None:
    event = {"event": "request", "route": "/v1/events", "status": 202, "detail": value}

    redacted = redact(None, "info", event)

    assert redacted == {"event": "request", "route": "/v1/events", "status": 202, "detail": shown}


def test_secret_named_keys_are_dropped_even_when_the_event_is_plain() -> None:
    redacted = redact(None, "info", {"event": "request", "token": "plain"})

    assert redacted == {"event": "request", "token": "[SECRET REDACTED]"}


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False))
def test_the_timestamp_is_the_utc_time_of_the_line(now: float) -> None:
    with patch("strongroom.observability.logging.time.time", return_value=now):
        stamped = add_timestamp(None, "info", {})["timestamp"]

    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", stamped)
    parsed = datetime.fromisoformat(stamped)
    assert parsed.utcoffset() == timedelta(0)
    assert abs(parsed.timestamp() - now) < 2e-6
