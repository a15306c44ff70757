"""Tests for strongroom.domain.cards: PAN detection, SAD keys and document screening."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import random
import re
import string
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.domain import cards
from strongroom.domain.cards import (
    SENSITIVE_AUTH_KEYS,
    Finding,
    contains_pan,
    find_pan_spans,
    is_sensitive_auth_key,
    luhn_valid,
    mask_pans,
    raw_body_is_clean,
    raw_digit_run_longer_than,
    raw_may_contain_pan_or_sad,
    screen_document,
)

MASK = "[PAN REDACTED]"


def check_digit(payload: str) -> str:
    """Return the Luhn check digit for ``payload`` as ISO/IEC 7812-1 Annex B defines it.

    Written independently of the module under test: starting from the payload digit that
    will sit next to the check digit and moving left, every other digit is doubled, and a
    doubled value above 9 contributes the sum of its two digits.
    """
    total = 0
    for position, char in enumerate(reversed(payload)):
        value = int(char)
        if position % 2 == 0:
            value *= 2
            value = value // 10 + value % 10
        total += value
    return str((10 - total % 10) % 10)


def make_pan(prefix: str, length: int, body: str) -> str:
    """Build a Luhn-valid PAN of ``length`` digits from ``prefix`` and filler ``body``."""
    payload = (prefix + body)[: length - 1]
    assert len(payload) == length - 1
    return payload + check_digit(payload)


def spread(start: int, stop: int) -> list[str]:
    return [str(number) for number in range(start, stop + 1)]


# Issuer prefixes and lengths per brand (ISO/IEC 7812 IINs as the networks publish them).
BRANDS: dict[str, tuple[list[str], list[int]]] = {
    "visa": (["4"], [13, 16, 19]),
    "mastercard": (spread(51, 55) + spread(2221, 2720), [16]),
    "amex": (["34", "37"], [15]),
    "discover": (["6011", "65", *spread(644, 649)], [16, 17, 18, 19]),
    "jcb": (spread(3528, 3589), [16, 17, 18, 19]),
    "unionpay": (["62"], [16, 17, 18, 19]),
    "diners": (["36", *spread(300, 305)], [14]),
    "maestro": (
        ["5018", "5020", "5038", "5893", "6304", "6759", "6761", "6762", "6763"],
        list(range(13, 20)),
    ),
}
ALL_PREFIXES = sorted({prefix for prefixes, _ in BRANDS.values() for prefix in prefixes})
PAN_LENGTHS = range(13, 20)

# The common printed groupings per length; other lengths fall back to groups of four.
STANDARD_GROUPS: dict[int, list[list[int]]] = {
    14: [[4, 6, 4]],
    15: [[4, 6, 5]],
    16: [[4, 4, 4, 4]],
    19: [[4, 4, 4, 4, 3], [6, 13]],
}

# Text around a PAN in the tests: no digits (they would join the run), and no hex letters
# a-f, so that the surroundings never turn the PAN into part of a hex identifier blob.
SURROUNDING = "ghijklmnopqrstuvwxyzGHIJKLMNOPQRSTUVWXYZ .,;:!?()[]{}<>/'\"=+*#@&%$_~|-\téüßπЖ漢字"
SAD_CANONICAL = {name.replace("_", "") for name in SENSITIVE_AUTH_KEYS}
PATH_SEGMENT = r"(?:[A-Za-z_][A-Za-z0-9_]{0,63}|<key>)"
PATH_SHAPE = re.compile(rf"(?:{PATH_SEGMENT}|\[\d+\])(?:\.{PATH_SEGMENT}|\[\d+\])*|")
BASE62 = string.digits + string.ascii_letters


def group(digits: str, sizes: list[int], separators: list[str]) -> str:
    parts: list[str] = []
    cursor = 0
    for size in sizes:
        parts.append(digits[cursor : cursor + size])
        cursor += size
    assert cursor == len(digits)
    out = parts[0]
    for separator, part in zip(separators, parts[1:], strict=True):
        out += separator + part
    return out


def four_by_four(length: int) -> list[int]:
    sizes = [4] * (length // 4)
    if length % 4:
        sizes.append(length % 4)
    return sizes


@st.composite
def pans(draw: st.DrawFn) -> str:
    """Any known issuer prefix with any length 13..19 and a correct check digit."""
    prefix = draw(st.sampled_from(ALL_PREFIXES))
    length = draw(st.sampled_from(PAN_LENGTHS))
    body = draw(st.text(string.digits, min_size=length, max_size=length))
    return make_pan(prefix, length, body)


@st.composite
def brand_pans(draw: st.DrawFn) -> str:
    """A PAN of a real brand, with that brand's own prefixes and lengths."""
    prefixes, lengths = BRANDS[draw(st.sampled_from(sorted(BRANDS)))]
    prefix = draw(st.sampled_from(prefixes))
    length = draw(st.sampled_from(lengths))
    body = draw(st.text(string.digits, min_size=length, max_size=length))
    return make_pan(prefix, length, body)


@st.composite
def shaped(draw: st.DrawFn, digits: str) -> str:
    """``digits`` written plain, in a printed grouping, or in random groups."""
    style = draw(st.sampled_from(["plain", "standard", "random"]))
    if style == "plain":
        return digits
    if style == "standard":
        sizes = draw(st.sampled_from(STANDARD_GROUPS.get(len(digits), [four_by_four(len(digits))])))
    else:
        cuts = sorted(draw(st.sets(st.integers(1, len(digits) - 1), max_size=len(digits) - 1)))
        edges = [0, *cuts, len(digits)]
        sizes = [end - start for start, end in itertools.pairwise(edges)]
    separators = draw(
        st.one_of(
            st.sampled_from([" ", "-"]).map(lambda sep: [sep] * (len(sizes) - 1)),
            st.lists(st.sampled_from([" ", "-"]), min_size=len(sizes) - 1, max_size=len(sizes) - 1),
        )
    )
    return group(digits, sizes, separators)


@st.composite
def shaped_pans(draw: st.DrawFn) -> tuple[str, str]:
    """A (digits, written form) pair for a PAN of any brand and shape."""
    digits = draw(st.one_of(pans(), brand_pans()))
    return digits, draw(shaped(digits))


surrounding = st.text(SURROUNDING, max_size=12)

identifier_keys = st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True).filter(
    lambda key: key.replace("_", "") not in SAD_CANONICAL and key != "sibling"
)


@st.composite
def locations(draw: st.DrawFn) -> list[str | int]:
    """A route into a document: dict keys (simple identifiers) and list indices."""
    return draw(st.lists(st.one_of(identifier_keys, st.integers(0, 3)), max_size=6))


def place(value: object, route: list[str | int]) -> object:
    """Nest ``value`` at ``route`` with harmless siblings at every level."""
    for step in reversed(route):
        if isinstance(step, str):
            value = {"sibling": "order 12345 at 2024-05-01T12:00:00Z", step: value}
        else:
            value = [*(f"item {index}" for index in range(step)), value, 42]
    return value


def path_of(route: list[str | int]) -> str:
    path = ""
    for step in route:
        if isinstance(step, int):
            path = f"{path}[{step}]"
            continue
        path = f"{path}.{step}" if path else step
    return path


def sad_spelling(draw: st.DrawFn, name: str) -> str:
    """``name`` with random case and any mix of '-', '_' and ' ' between its characters."""
    chars = [char for char in name if char != "_"]
    out = draw(st.sampled_from(["", "-", "_", " "]))
    for index, char in enumerate(chars):
        out += char.upper() if draw(st.booleans()) else char.lower()
        if index < len(chars) - 1:
            out += draw(st.sampled_from(["", "", "-", "_", " "]))
    return out


@st.composite
def sad_keys(draw: st.DrawFn) -> str:
    return sad_spelling(draw, draw(st.sampled_from(sorted(SENSITIVE_AUTH_KEYS))))


# --- Luhn --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("digits", "expected"),
    [
        ("79927398713", True),
        ("79927398710", False),
        ("79927398711", False),
        ("4111111111111111", True),
        ("4111111111111112", False),
        ("5555555555554444", True),
        ("378282246310005", True),
        ("6011111111111117", True),
        ("3530111333300000", True),
        ("30569309025904", True),
        ("6200000000000005", True),
        ("0", True),
        ("18", True),
        ("19", False),
    ],
)
def test_luhn_known_answers(digits: str, expected: bool) -> None:
    assert luhn_valid(digits) is expected


@pytest.mark.parametrize("bad", ["", "12a4", " 1234", "1234-5678", "-1", "１２３", "٤١", "4.1"])
def test_luhn_rejects_anything_but_ascii_digits(bad: str) -> None:
    with pytest.raises(ValueError, match="ASCII digits"):
        luhn_valid(bad)


@given(st.text(string.digits, min_size=1, max_size=40))
def test_luhn_agrees_with_the_iso_definition(payload: str) -> None:
    good = check_digit(payload)
    assert luhn_valid(payload + good)
    for other in string.digits.replace(good, ""):
        assert not luhn_valid(payload + other)


# --- PAN detection: no misses ------------------------------------------------------------


def test_every_prefix_and_length_is_detected() -> None:
    rng = random.Random(7812)
    for prefix in ALL_PREFIXES:
        for length in PAN_LENGTHS:
            pan = make_pan(prefix, length, "".join(rng.choices(string.digits, k=length)))
            assert find_pan_spans(pan) == [(0, length)], pan
            assert contains_pan(f"abc{pan}xyz"), pan
            assert screen_document({"n": int(pan)}) == [Finding("n", "pan_detected")], pan


@pytest.mark.parametrize(
    "text",
    [
        "abc4111111111111111xyz",
        "4111111111111111",
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "4111-1111 1111-1111",
        "3782 822463 10005",
        "card:5555555555554444.",
        "x 6011111111111117",
        "3530111333300000 y",
        "30569309025904",
        "４１１１１１１１１１１１１１１１",
        "４１１１ １１１１ １１１１ １１１１",
        "٤١١١١١١١١١١١١١١١",
        "Zoë paid with 4111\u00a01111\u00a01111\u00a01111 today",
        "4111111111111111-550e8400-e29b-41d4-a716-446655440000",
    ],
)
def test_known_pan_shapes_are_detected(text: str) -> None:
    assert contains_pan(text)
    assert find_pan_spans(text)
    assert not contains_pan(mask_pans(text))


def test_a_formatted_card_followed_by_another_group_is_caught() -> None:
    text = "4111 1111 1111 1111 1234"
    assert find_pan_spans(text) == [(0, 19)]
    assert mask_pans(text) == f"{MASK} 1234"


def test_a_group_before_a_formatted_card_is_caught() -> None:
    text = "ref 1234-4111-1111-1111-1111"
    [(start, end)] = find_pan_spans(text)
    assert text[start:end] == "4111-1111-1111-1111"
    assert mask_pans(text) == f"ref 1234-{MASK}"


@settings(deadline=None)
@given(shaped_pans(), surrounding, surrounding)
def test_pans_in_every_shape_and_surrounding_are_found(
    pan: tuple[str, str], before: str, after: str
) -> None:
    digits, written = pan
    text = before + written + after
    assert contains_pan(text)
    assert find_pan_spans(text) == [(len(before), len(before) + len(written))]
    assert mask_pans(text) == before + MASK + after
    assert digits not in mask_pans(text)


@given(shaped_pans(), st.text(SURROUNDING, min_size=1, max_size=8))
def test_pans_at_the_start_and_end_of_a_string(pan: tuple[str, str], other: str) -> None:
    _, written = pan
    assert find_pan_spans(written + other) == [(0, len(written))]
    assert find_pan_spans(other + written) == [(len(other), len(other) + len(written))]


@given(st.lists(shaped_pans(), min_size=2, max_size=4), surrounding)
def test_several_pans_are_all_masked(found: list[tuple[str, str]], glue: str) -> None:
    # Each PAN is fenced by letters so that neighbours cannot join into one run.
    text = "".join(f"{glue}x{written}x" for _, written in found) + glue
    assert len(find_pan_spans(text)) == len(found)
    masked = mask_pans(text)
    assert masked.count(MASK) == len(found)
    assert masked == "".join(f"{glue}x{MASK}x" for _ in found) + glue


def test_fullwidth_pan_spans_refer_to_the_original_string() -> None:
    text = "café ４１１１１１１１１１１１１１１１ ok"
    assert find_pan_spans(text) == [(5, 21)]
    assert mask_pans(text) == f"café {MASK} ok"


def test_a_compatibility_character_expanding_to_two_digits_is_masked_whole() -> None:
    # U+2469 (circled ten) is "10" under NFKC; here it spells the first two PAN digits.
    payload = "10" + "1" * 13
    pan = payload + check_digit(payload)
    text = "x \u2469" + pan[2:] + " y"
    assert find_pan_spans(text) == [(2, len(text) - 2)]
    assert contains_pan(text)
    assert mask_pans(text) == f"x {MASK} y"


# --- PAN detection: no false positives ---------------------------------------------------


@given(st.uuids())
def test_uuids_are_not_pans(value: uuid.UUID) -> None:
    for text in (str(value), value.hex, str(value).upper(), f"urn:uuid:{value}", f"{{{value}}}"):
        assert not contains_pan(text)
        assert find_pan_spans(text) == []


@given(st.binary())
def test_hex_digests_are_not_pans(data: bytes) -> None:
    for algorithm in ("md5", "sha1", "sha256", "sha512"):
        digest = hashlib.new(algorithm, data).hexdigest()
        assert not contains_pan(digest)
        assert not contains_pan(digest.upper())
        assert not contains_pan(f"sha:{digest}")


def test_uuid4_and_digest_false_positive_rate_is_zero_in_bulk() -> None:
    # Under the bare digit-run rules about 0.3% of these would be flagged; see invariant 5.
    rng = random.Random(5)
    for _ in range(20_000):
        value = uuid.UUID(int=rng.getrandbits(128), version=4)
        digest = hashlib.sha256(value.bytes).hexdigest()
        assert not contains_pan(str(value))
        assert not contains_pan(value.hex)
        assert not contains_pan(digest)


def test_a_pan_inside_text_that_is_not_a_hex_blob_is_still_found() -> None:
    hex_blob = "a4111111111111111abcdefabcdefabc"
    assert len(hex_blob) == 32
    assert not contains_pan(hex_blob)
    assert contains_pan(hex_blob[:-1] + "x")
    assert contains_pan(hex_blob[:20])


@given(st.binary(min_size=1))
def test_base62_tokens_are_not_pans(seed: bytes) -> None:
    # A real token is uniformly random, so derive its characters from a hash of the example.
    number = int.from_bytes(hashlib.sha256(seed).digest(), "big")
    chars = []
    for _ in range(24):
        number, index = divmod(number, 62)
        chars.append(BASE62[index])
    token = "tok_" + "".join(chars)
    assert not contains_pan(token)
    assert screen_document({"token": token}) == []


@given(
    st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1)),
    st.integers(-1439, 1439),
)
def test_timestamps_are_not_pans(moment: datetime, offset_minutes: int) -> None:
    aware = moment.replace(tzinfo=timezone(timedelta(minutes=offset_minutes)))
    for text in (
        aware.isoformat(),
        aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        aware.strftime("%Y-%m-%d %H:%M:%S"),
    ):
        assert not contains_pan(text), text


@given(st.integers(-(10**12) + 1, 10**12 - 1))
def test_short_numbers_and_amounts_are_not_pans(number: int) -> None:
    assert not contains_pan(str(number))
    assert not contains_pan(f"{abs(number) // 100}.{abs(number) % 100:02d} EUR")
    assert screen_document({"amount": number, "minor": float(number) / 100}) == []


@settings(deadline=None)
@given(pans(), st.integers(1, 9), st.sampled_from(["", " ", "-"]))
def test_luhn_invalid_runs_are_not_pans(pan: str, offset: int, separator: str) -> None:
    wrong = pan[:-1] + str((int(pan[-1]) + offset) % 10)
    # Groups of four give no sub-window of 13..19 digits other than the whole number when
    # it has 16 digits, and plain runs have none at all, so neither may match.
    assert not contains_pan(wrong)
    assert not contains_pan(f"ab {wrong} cd")
    assert screen_document({"n": int(wrong), "s": wrong}) == []
    if len(wrong) == 16:
        assert not contains_pan(group(wrong, [4, 4, 4, 4], [separator] * 3))


@given(st.text(string.digits, min_size=20, max_size=80), surrounding, surrounding)
def test_runs_longer_than_19_digits_without_separators_are_not_pans(
    digits: str, before: str, after: str
) -> None:
    assert not contains_pan(before + digits + after)
    # A leading 1 keeps the int as long as the text (int() drops leading zeros).
    assert screen_document({"n": int("1" + digits)}) == []


@pytest.mark.parametrize(
    "text",
    [
        "",
        "4111111111111111" + "1234",
        "4111  1111 1111 1111",
        "4111 -1111-1111-1111",
        "4111--1111-1111-1111",
        "411111111111",
        "+1 (555) 123-4567",
        "2024-05-01T12:00:00.123456789Z",
        "Order 1234 of 5678, 12.50 EUR",
    ],
)
def test_other_digit_strings_are_not_pans(text: str) -> None:
    assert not contains_pan(text)
    assert find_pan_spans(text) == []
    assert mask_pans(text) == text


# --- PAN detection: internal consistency ------------------------------------------------

# Pieces chosen to build digit runs, broken runs and the Unicode cases, not just noise.
wild_text = st.lists(
    st.sampled_from(
        [
            *string.digits,
            *(" ", "-", "  ", "a", "x", "Z", ".", "４", "٤", "\u2491", "\u2469", "é", "\u00a0"),
            *("4111 1111 1111 1111", "378282246310005"),
        ]
    ),
    max_size=30,
).map("".join)


@settings(deadline=None)
@given(st.one_of(wild_text, st.text(max_size=60)))
def test_spans_masks_and_contains_agree(text: str) -> None:
    spans = find_pan_spans(text)
    assert contains_pan(text) is bool(spans)
    cursor = 0
    for start, end in spans:
        assert cursor <= start < end <= len(text)
        cursor = end
    masked = mask_pans(text)
    assert not contains_pan(masked)
    if not spans:
        assert masked == text
    else:
        # Everything outside the spans survives unchanged and in order.
        ends = [0, *(end for _, end in spans)]
        starts = [*(start for start, _ in spans), len(text)]
        kept = [text[end:start] for end, start in zip(ends, starts, strict=True)]
        assert masked == MASK.join(kept)


def test_adversarial_runs_stay_linear() -> None:
    # Runs of one-digit groups give the most candidate windows; none of these is Luhn-valid.
    text = " ".join("1" * 100_000)
    started = time.perf_counter()
    assert find_pan_spans(text) == []
    assert not contains_pan(text)
    assert time.perf_counter() - started < 5


# --- Sensitive authentication data keys ------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        *sorted(SENSITIVE_AUTH_KEYS),
        "CVV",
        "Cvc2",
        "Card-Verification-Value",
        "card verification value",
        "track 2",
        "Track-Data",
        "PIN_BLOCK",
        "pin-block",
        "Security Code",
        "MagStripe",
        " cvv ",
        "ＣＶＶ",
    ],
)
def test_sensitive_keys_match_in_any_case_and_spelling(key: str) -> None:
    assert is_sensitive_auth_key(key)


@pytest.mark.parametrize(
    "key",
    ["", "card", "number", "pins", "spin", "cvv_hint", "pin_code", "tracking", "trace", "cids"],
)
def test_other_keys_are_not_sensitive(key: str) -> None:
    assert not is_sensitive_auth_key(key)


@given(sad_keys(), locations())
def test_sensitive_keys_are_found_nested_anywhere_with_their_path(
    key: str, route: list[str | int]
) -> None:
    assert is_sensitive_auth_key(key)
    parent = path_of(route)
    shown = key if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", key) else "<key>"
    expected = f"{parent}.{shown}" if parent else shown
    doc = place({key: "123"}, route)
    assert screen_document(doc) == [Finding(expected, "sensitive_authentication_data")]


# --- screen_document ---------------------------------------------------------------------


@settings(deadline=None)
@given(shaped_pans(), surrounding, locations())
def test_pan_values_are_found_with_their_path(
    pan: tuple[str, str], before: str, route: list[str | int]
) -> None:
    digits, written = pan
    path = path_of(route)
    for value in (before + written, written, int(digits)):
        findings = screen_document(place(value, route))
        assert findings == [Finding(path, "pan_detected")]
        assert digits not in findings[0].path


@settings(deadline=None)
@given(shaped_pans(), locations())
def test_pan_keys_are_reported_as_key_placeholders(
    pan: tuple[str, str], route: list[str | int]
) -> None:
    digits, written = pan
    parent = path_of(route)
    for key in (written, f"k{digits}", f"note {written}"):
        findings = screen_document(place({key: "value"}, route))
        expected = f"{parent}.<key>" if parent else "<key>"
        assert findings == [Finding(expected, "pan_detected")]


def test_batch_findings_name_the_event_index() -> None:
    events = [
        {"id": str(uuid.UUID(int=index, version=4)), "amount": 1000 + index, "metadata": {}}
        for index in range(5)
    ]
    events[3]["metadata"] = {"note": "card 4111 1111 1111 1111"}
    events[0]["metadata"] = {"Card Number!": "5555-5555-5555-4444", "cvv": "123"}
    events[4]["amount"] = 4111111111111111
    findings = screen_document({"events": events})
    assert findings == [
        Finding("events[0].metadata.<key>", "pan_detected"),
        Finding("events[0].metadata.cvv", "sensitive_authentication_data"),
        Finding("events[3].metadata.note", "pan_detected"),
        Finding("events[4].amount", "pan_detected"),
    ]


def test_findings_come_in_document_order_with_sad_before_pan_for_one_key() -> None:
    doc = {
        "b": "4111111111111111",
        "track2": "4111111111111111=25121010000000000000",
        "a": [{"PIN": 1234}, 378282246310005],
    }
    assert screen_document(doc) == [
        Finding("b", "pan_detected"),
        Finding("track2", "sensitive_authentication_data"),
        Finding("track2", "pan_detected"),
        Finding("a[0].PIN", "sensitive_authentication_data"),
        Finding("a[1]", "pan_detected"),
    ]


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ("4111111111111111", [Finding("", "pan_detected")]),
        (4111111111111111, [Finding("", "pan_detected")]),
        (-4111111111111111, [Finding("", "pan_detected")]),
        (4111111111111111.0, [Finding("", "pan_detected")]),
        (4.2e15, [Finding("", "pan_detected")]),
        ([["x", "4111111111111111"]], [Finding("[0][1]", "pan_detected")]),
        (True, []),
        (None, []),
        (12.5, []),
        (float("inf"), []),
        ({}, []),
        ([], []),
    ],
)
def test_root_and_scalar_handling(doc: object, expected: list[Finding]) -> None:
    assert screen_document(doc) == expected


def test_huge_ints_are_not_converted_to_text() -> None:
    # CPython refuses int-to-str above 4300 digits; such a number is no PAN anyway.
    assert screen_document({"n": 10**5000, "m": -(10**5000)}) == []


def test_keys_that_are_not_simple_identifiers_are_hidden() -> None:
    long_key = "a" * 65
    doc = {long_key: {"x.y": {"ok_key": "4111111111111111"}}}
    assert screen_document(doc) == [Finding("<key>.<key>.ok_key", "pan_detected")]


def test_allowed_pan_paths_suppress_only_the_named_field() -> None:
    pan = "4111111111111111"
    doc = {
        "card": {"number": pan, "note": pan, "cvv": "123"},
        "events": [{"card": {"number": int(pan)}}, {"card": {"number": pan, "extra": pan}}],
        "card-info": {"number": pan},
        "nested": {"card": {"number": pan}},
    }
    allowed = frozenset({"card.number", "events[].card.number", "<key>.number"})
    assert screen_document(doc, allowed_pan_paths=allowed) == [
        Finding("card.note", "pan_detected"),
        Finding("card.cvv", "sensitive_authentication_data"),
        Finding("events[1].card.extra", "pan_detected"),
        Finding("<key>.number", "pan_detected"),
        Finding("nested.card.number", "pan_detected"),
    ]


def test_allowed_paths_for_a_top_level_list() -> None:
    doc = [{"card": {"number": "4111 1111 1111 1111"}}]
    assert screen_document(doc, allowed_pan_paths=frozenset({"[].card.number"})) == []
    assert screen_document(doc) == [Finding("[0].card.number", "pan_detected")]


def test_allowed_paths_do_not_excuse_sad_keys_or_pan_keys() -> None:
    doc = {"card": {"number": {"cvc": "123", "4111111111111111": "x"}}}
    assert screen_document(doc, allowed_pan_paths=frozenset({"card.number"})) == [
        Finding("card.number.cvc", "sensitive_authentication_data"),
        Finding("card.number.<key>", "pan_detected"),
    ]


def nest(depth: int, kind: str) -> object:
    doc: object = "4111111111111111"
    for level in range(depth):
        doc = [doc] if kind == "list" or (kind == "mixed" and level % 2) else {"k": doc}
    return doc


@pytest.mark.parametrize("kind", ["list", "dict", "mixed"])
def test_depth_cap(kind: str) -> None:
    assert len(screen_document(nest(64, kind))) == 1
    with pytest.raises(ValueError, match="document nests deeper than 64 levels"):
        screen_document(nest(65, kind))


def test_cycles_hit_the_depth_cap() -> None:
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="deeper than 64"):
        screen_document(loop)


@pytest.mark.parametrize("doc", [{"a": object()}, {"a": (1, 2)}, {1: "x"}, {"a": b"4111"}])
def test_non_json_values_fail_closed(doc: object) -> None:
    with pytest.raises(TypeError):
        screen_document(doc)


def test_finding_is_a_frozen_slotted_value() -> None:
    finding = Finding("a.b", "pan_detected")
    assert finding == Finding("a.b", "pan_detected")
    assert hash(finding) == hash(Finding("a.b", "pan_detected"))
    assert not hasattr(finding, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        finding.path = "c"  # type: ignore[misc]


# --- raw_may_contain_pan_or_sad -----------------------------------------------------------


@given(
    st.sets(st.text("abc0", min_size=1, max_size=6), min_size=1, max_size=12),
    st.text("abc0", max_size=7),
)
def test_the_trie_alternation_matches_exactly_its_words(words: set[str], candidate: str) -> None:
    encoded = [word.encode() for word in words]
    pattern = re.compile(cards._alternation(encoded))
    assert (pattern.fullmatch(candidate.encode()) is not None) == (candidate in words)
    for word in encoded:
        assert pattern.fullmatch(word) is not None


@pytest.mark.parametrize(
    "body",
    [
        b'{"CVV":1}',
        b'{"Card-Verification-Value" :\n "x"}',
        b'{"a": {"track 2": "x"}}',
        b'{"note": "4111 1111 1111 1111"}',
        b'{"n": 4111111111111111}',
        b'{"n": 42e14}',
        b"42E+14",
        b'{"a": "\\u0034"}',
        '{"a": "４"}'.encode(),
    ],
)
def test_raw_prefilter_flags_risky_bodies(body: bytes) -> None:
    assert raw_may_contain_pan_or_sad(body)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{}",
        b'{"amount": 1299, "currency": "EUR", "note": "cvv"}',
        b'{"id": "f47ac10b-58cc-4372-a567-0e02b2c3d479", "at": "2024-05-01T12:00:00Z"}',
        b'{"cvv_hint": "three digits", "pins": [1, 2, 3]}',
        b'{"ratio": 1.5, "big": 123456789012}',
    ],
)
def test_raw_prefilter_passes_ordinary_bodies(body: bytes) -> None:
    assert not raw_may_contain_pan_or_sad(body)


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(10**12, 10**19),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=1e12, max_value=1e20, allow_nan=False),
    st.text(),
    wild_text,
    shaped_pans().map(lambda pan: pan[1]),
    shaped_pans().map(lambda pan: int(pan[0])),
    shaped_pans().map(lambda pan: float(pan[0])),
)
json_keys = st.one_of(
    st.text(max_size=12), wild_text, sad_keys(), shaped_pans().map(lambda p: p[1])
)
json_documents = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(json_keys, children, max_size=4)
    ),
    max_leaves=12,
)


@settings(deadline=None, max_examples=300)
@given(json_documents, st.sampled_from([None, 2]), st.sampled_from([None, (",", ":")]))
def test_raw_prefilter_never_misses_what_screening_finds(
    doc: object, indent: int | None, separators: tuple[str, str] | None
) -> None:
    for ensure_ascii in (True, False):
        body = json.dumps(
            doc, ensure_ascii=ensure_ascii, indent=indent, separators=separators
        ).encode()
        if screen_document(json.loads(body)):
            assert raw_may_contain_pan_or_sad(body)


@given(json_documents, st.one_of(sad_keys(), shaped_pans().map(lambda p: p[1])), locations())
def test_raw_prefilter_flags_documents_with_planted_findings(
    doc: object, planted: str, route: list[str | int]
) -> None:
    body = json.dumps({"doc": doc, "planted": place({planted: planted}, route)}).encode()
    assert screen_document(json.loads(body))
    assert raw_may_contain_pan_or_sad(body)


json_whitespace = st.text(" \t\n\r", max_size=3)


@st.composite
def number_literals(draw: st.DrawFn) -> str:
    """JSON numbers spelt every way the grammar allows, exponents included."""
    sign = draw(st.sampled_from(["", "-"]))
    whole = str(draw(st.one_of(st.integers(0, 10**6), st.integers(0, 10**20))))
    fraction = draw(st.one_of(st.just(""), st.text(string.digits, min_size=1, max_size=6)))
    literal = sign + whole + ("." + fraction if fraction else "")
    if draw(st.booleans()):
        marker = draw(st.sampled_from(["e", "E"])) + draw(st.sampled_from(["", "+", "-"]))
        literal += marker + draw(st.text("0", max_size=2)) + str(draw(st.integers(0, 25)))
    return literal


@given(number_literals(), json_whitespace, json_whitespace, st.booleans())
def test_raw_prefilter_never_misses_a_number_however_it_is_spelt(
    literal: str, before: str, after: str, wrapped: bool
) -> None:
    body = (f"[{before}{literal}{after}]" if wrapped else f"{before}{literal}{after}").encode()
    if screen_document(json.loads(body)):
        assert raw_may_contain_pan_or_sad(body)


@given(sad_keys(), json_whitespace, json_whitespace)
def test_raw_prefilter_flags_sad_keys_with_any_json_whitespace(
    key: str, before: str, after: str
) -> None:
    body = f'{{{before}"{key}"{after}:{before}"x"{after}}}'.encode()
    assert screen_document(json.loads(body))
    assert raw_may_contain_pan_or_sad(body)


# --- Paths ---------------------------------------------------------------------------------


@settings(deadline=None)
@given(json_documents)
def test_paths_are_well_formed_and_never_hold_a_pan(doc: object) -> None:
    for finding in screen_document(doc):
        assert PATH_SHAPE.fullmatch(finding.path), finding.path
        assert not contains_pan(finding.path)


# --- raw_body_is_clean: the exact fast path ------------------------------------------------


@settings(deadline=None, max_examples=300)
@given(json_documents, st.sampled_from([None, 2]), st.sampled_from([None, (",", ":")]))
def test_a_body_called_clean_has_nothing_for_the_walk_to_find(
    doc: object, indent: int | None, separators: tuple[str, str] | None
) -> None:
    for ensure_ascii in (True, False):
        body = json.dumps(
            doc, ensure_ascii=ensure_ascii, indent=indent, separators=separators
        ).encode()
        if raw_body_is_clean(body):
            assert screen_document(json.loads(body)) == []


@given(json_documents, st.one_of(sad_keys(), shaped_pans().map(lambda p: p[1])), locations())
def test_a_body_with_planted_card_data_is_never_called_clean(
    doc: object, planted: str, route: list[str | int]
) -> None:
    body = json.dumps({"doc": doc, "planted": place({planted: planted}, route)}).encode()
    assert not raw_body_is_clean(body)


@given(number_literals(), json_whitespace, json_whitespace)
def test_a_number_called_clean_holds_no_pan(literal: str, before: str, after: str) -> None:
    body = f"[{before}{literal}{after}]".encode()
    if raw_body_is_clean(body):
        assert screen_document(json.loads(body)) == []


def test_ordinary_event_batches_take_the_fast_path() -> None:
    events = [
        {
            "event_id": str(uuid.UUID(int=index * 7919 + 1)),
            "event_timestamp": "2026-11-22T10:00:00Z",
            "merchant_id_hash": hashlib.sha256(str(index).encode()).hexdigest(),
            "retry_count": index % 5,
        }
        for index in range(100)
    ]
    assert raw_body_is_clean(json.dumps({"events": events}).encode())


@pytest.mark.parametrize(
    ("body", "longer"),
    [
        (b'{"a": "' + b"1 " * 300 + b'"}', True),
        (b'{"a": "' + b"1" * 257 + b'"}', True),
        (b'{"a": "' + b"1" * 256 + b'"}', False),
        (b'{"a": "' + b" " * 600 + b'"}', False),
        (b'{"a": "1--1"}', False),
    ],
)
def test_long_digit_runs_are_measured_in_digits(body: bytes, longer: bool) -> None:
    assert raw_digit_run_longer_than(body, 256) is longer
