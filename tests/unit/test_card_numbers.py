"""Tests for strongroom.domain.card_numbers: brand ranges, lengths, Luhn and expiry."""

from __future__ import annotations

import pickle
import string
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from strongroom.domain.card_numbers import (
    Brand,
    CardInvalid,
    CardProblem,
    ValidCard,
    brand_of,
    validate_card,
)

TODAY = date(2025, 6, 15)


def check_digit(payload: str) -> str:
    """Return the Luhn check digit for ``payload``, written apart from the code under test.

    Starting from the payload digit that will sit next to the check digit and moving left,
    every other digit is doubled, and a doubled value above 9 counts as the sum of its digits.
    """
    total = 0
    for position, char in enumerate(reversed(payload)):
        value = int(char)
        if position % 2 == 0:
            value *= 2
            value = value // 10 + value % 10
        total += value
    return str((10 - total % 10) % 10)


def make_number(prefix: str, length: int, filler: str = "") -> str:
    """A Luhn-valid number of ``length`` digits: ``prefix``, then ``filler``, then zeros."""
    payload = (prefix + filler).ljust(length - 1, "0")[: length - 1]
    return payload + check_digit(payload)


def problems_of(
    number: str, exp_month: int = 12, exp_year: int = 2030, today: date = TODAY
) -> list[tuple[str, str]]:
    """The (field, code) pairs ``validate_card`` reports, or [] when the card is valid."""
    try:
        validate_card(number, exp_month, exp_year, today=today)
    except CardInvalid as exc:
        return [(problem.field, problem.code) for problem in exc.problems]
    return []


# --- Known test numbers ------------------------------------------------------------------

KNOWN_NUMBERS = [
    ("4111111111111111", Brand.VISA),
    ("4242424242424242", Brand.VISA),
    ("4222222222222", Brand.VISA),
    ("5555555555554444", Brand.MASTERCARD),
    ("5105105105105100", Brand.MASTERCARD),
    ("2223003122003222", Brand.MASTERCARD),
    ("378282246310005", Brand.AMEX),
    ("371449635398431", Brand.AMEX),
    ("6011111111111117", Brand.DISCOVER),
    ("6011000990139424", Brand.DISCOVER),
    ("6445644564456445", Brand.DISCOVER),
    ("3530111333300000", Brand.JCB),
    ("3566002020360505", Brand.JCB),
    ("6200000000000005", Brand.UNIONPAY),
    ("6205500000000000004", Brand.UNIONPAY),
    ("36227206271667", Brand.DINERS),
    ("3056930009020004", Brand.DINERS),
    ("38520000023237", Brand.DINERS),
    ("6759649826438453", Brand.MAESTRO),
    ("6304000000000000", Brand.MAESTRO),
    ("5018000000000009", Brand.MAESTRO),
]


@pytest.mark.parametrize(("number", "brand"), KNOWN_NUMBERS, ids=str)
def test_known_test_numbers_are_accepted_with_their_brand(number: str, brand: Brand) -> None:
    assert number[-1] == check_digit(number[:-1]), "test data must be Luhn-valid"
    card = validate_card(number, 12, 2030, today=TODAY)
    assert card == ValidCard(number, brand, 12, 2030)
    assert card.last4 == number[-4:]
    assert card.bin6 == number[:6]
    assert brand_of(number) is brand


def test_every_brand_has_a_known_test_number() -> None:
    assert {brand for _, brand in KNOWN_NUMBERS} == set(Brand)


# --- IIN ranges --------------------------------------------------------------------------

PREFIXES: list[tuple[str, Brand | None]] = [
    ("4", Brand.VISA),
    ("50", None),
    ("51", Brand.MASTERCARD),
    ("55", Brand.MASTERCARD),
    ("56", None),
    ("2220", None),
    ("2221", Brand.MASTERCARD),
    ("2720", Brand.MASTERCARD),
    ("2721", None),
    ("33", None),
    ("34", Brand.AMEX),
    ("35", None),
    ("37", Brand.AMEX),
    ("6010", None),
    ("6011", Brand.DISCOVER),
    ("6012", None),
    ("643", None),
    ("644", Brand.DISCOVER),
    ("649", Brand.DISCOVER),
    ("65", Brand.DISCOVER),
    ("66", None),
    ("622125", Brand.UNIONPAY),
    ("622126", Brand.DISCOVER),
    ("622925", Brand.DISCOVER),
    ("622926", Brand.UNIONPAY),
    ("3527", None),
    ("3528", Brand.JCB),
    ("3589", Brand.JCB),
    ("3590", None),
    ("62", Brand.UNIONPAY),
    ("80", None),
    ("81", Brand.UNIONPAY),
    ("82", None),
    ("36", Brand.DINERS),
    ("300", Brand.DINERS),
    ("305", Brand.DINERS),
    ("306", None),
    ("38", Brand.DINERS),
    ("39", Brand.DINERS),
    ("5017", None),
    ("5018", Brand.MAESTRO),
    ("5019", None),
    ("5020", Brand.MAESTRO),
    ("5038", Brand.MAESTRO),
    ("5892", None),
    ("5893", Brand.MAESTRO),
    ("5894", None),
    ("6303", None),
    ("6304", Brand.MAESTRO),
    ("6305", None),
    ("6758", None),
    ("6759", Brand.MAESTRO),
    ("6760", None),
    ("6761", Brand.MAESTRO),
    ("6762", Brand.MAESTRO),
    ("6763", Brand.MAESTRO),
    ("6764", None),
    ("0", None),
    ("1", None),
    ("7", None),
    ("9", None),
]


@pytest.mark.parametrize(("prefix", "brand"), PREFIXES, ids=[prefix for prefix, _ in PREFIXES])
def test_brand_of_follows_iin_ranges(prefix: str, brand: Brand | None) -> None:
    assert brand_of(prefix.ljust(16, "0")) is brand
    assert brand_of(prefix.ljust(16, "9")) is brand


@pytest.mark.parametrize(
    ("prefix", "brand"),
    [
        ("2220", None),
        ("2221", Brand.MASTERCARD),
        ("2720", Brand.MASTERCARD),
        ("2721", None),
        ("622125", Brand.UNIONPAY),
        ("622126", Brand.DISCOVER),
        ("622925", Brand.DISCOVER),
        ("622926", Brand.UNIONPAY),
    ],
)
def test_range_boundaries_decide_validation(prefix: str, brand: Brand | None) -> None:
    number = make_number(prefix, 16, "1234")
    if brand is None:
        assert problems_of(number) == [("number", "unknown_brand")]
    else:
        assert validate_card(number, 12, 2030, today=TODAY).brand is brand


def test_brand_of_matches_only_ranges_it_has_enough_digits_for() -> None:
    assert brand_of("4") is Brand.VISA
    assert brand_of("62") is Brand.UNIONPAY
    assert brand_of("6222") is Brand.UNIONPAY
    assert brand_of("622200") is Brand.DISCOVER
    assert brand_of("222") is None


@pytest.mark.parametrize("text", ["", "4111 1111", "4111-1111", "４１１１", "x"])
def test_brand_of_refuses_non_digits(text: str) -> None:
    with pytest.raises(ValueError, match="ASCII digits"):
        brand_of(text)


# --- Lengths -----------------------------------------------------------------------------

BRAND_PREFIX_LENGTHS: list[tuple[Brand, str, list[int]]] = [
    (Brand.VISA, "4", [13, 16, 19]),
    (Brand.MASTERCARD, "51", [16]),
    (Brand.AMEX, "34", [15]),
    (Brand.DISCOVER, "6011", [16, 17, 18, 19]),
    (Brand.JCB, "3528", [16, 17, 18, 19]),
    (Brand.UNIONPAY, "62", [16, 17, 18, 19]),
    (Brand.DINERS, "36", [14, 15, 16, 17, 18, 19]),
    (Brand.MAESTRO, "6759", [12, 13, 14, 15, 16, 17, 18, 19]),
]


@pytest.mark.parametrize(
    ("brand", "prefix", "length", "allowed"),
    [
        (brand, prefix, length, length in lengths)
        for brand, prefix, lengths in BRAND_PREFIX_LENGTHS
        for length in range(12, 20)
    ],
    ids=str,
)
def test_each_brand_accepts_exactly_its_lengths(
    brand: Brand, prefix: str, length: int, allowed: bool
) -> None:
    number = make_number(prefix, length, "987654321")
    if allowed:
        assert validate_card(number, 12, 2030, today=TODAY).brand is brand
        return
    with pytest.raises(CardInvalid) as caught:
        validate_card(number, 12, 2030, today=TODAY)
    [problem] = caught.value.problems
    assert (problem.field, problem.code) == ("number", "bad_length")
    assert f"has {length}" in problem.message


def test_length_message_spells_out_the_brand_rule() -> None:
    with pytest.raises(CardInvalid) as caught:
        validate_card(make_number("4", 14), 12, 2030, today=TODAY)
    assert caught.value.problems[0].message == (
        "Visa numbers have 13, 16 or 19 digits, and this one has 14"
    )
    with pytest.raises(CardInvalid) as caught:
        validate_card(make_number("34", 16), 12, 2030, today=TODAY)
    assert caught.value.problems[0].message.startswith("American Express numbers have 15 digits")
    with pytest.raises(CardInvalid) as caught:
        validate_card(make_number("6011", 15), 12, 2030, today=TODAY)
    assert caught.value.problems[0].message.startswith("Discover numbers have 16 to 19 digits")


@pytest.mark.parametrize("length", [1, 11, 20, 25])
def test_numbers_outside_twelve_to_nineteen_digits_are_refused(length: int) -> None:
    # Only the length is reported: brand and check digit mean nothing at a wrong length.
    assert problems_of("4" * length) == [("number", "bad_length")]


# --- Luhn and characters -----------------------------------------------------------------


@pytest.mark.parametrize(("number", "brand"), KNOWN_NUMBERS, ids=str)
def test_wrong_check_digit_is_reported(number: str, brand: Brand) -> None:
    wrong = number[:-1] + str((int(number[-1]) + 1) % 10)
    assert problems_of(wrong) == [("number", "luhn_failed")]


def test_luhn_is_required_for_unionpay_too() -> None:
    assert problems_of("6200000000000006") == [("number", "luhn_failed")]


@pytest.mark.parametrize(
    "number",
    [
        "",
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        " 4111111111111111",
        "4111111111111111\n",
        "+4111111111111111",
        "4111111111111111.0",
        "４１１１１１１１１１１１１１１１",
        "٤١١١١١١١١١١١١١١١",
        "²111111111111111",
        "411111111111111x",
    ],
)
def test_anything_but_ascii_digits_is_refused(number: str) -> None:
    assert problems_of(number) == [("number", "not_digits")]


# --- Expiry ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("today", "exp_month", "exp_year", "expected"),
    [
        (date(2025, 6, 15), 6, 2025, []),
        (date(2025, 6, 30), 6, 2025, []),
        (date(2025, 7, 1), 6, 2025, [("exp_month", "expired")]),
        (date(2025, 6, 1), 5, 2025, [("exp_month", "expired")]),
        (date(2025, 12, 31), 12, 2025, []),
        (date(2026, 1, 1), 12, 2025, [("exp_year", "expired")]),
        (date(2025, 6, 15), 1, 2026, []),
        (date(2025, 6, 15), 12, 2024, [("exp_year", "expired")]),
        (date(2025, 6, 15), 12, 2075, []),
        (date(2025, 6, 15), 1, 2076, [("exp_year", "bad_year")]),
        (date(2025, 6, 15), 12, 25, [("exp_year", "bad_year")]),
        (date(2025, 6, 15), 12, 0, [("exp_year", "bad_year")]),
        (date(2025, 6, 15), 12, -2030, [("exp_year", "bad_year")]),
        (date(2025, 6, 15), 12, 99999, [("exp_year", "bad_year")]),
        (date(2025, 6, 15), 0, 2030, [("exp_month", "bad_month")]),
        (date(2025, 6, 15), 13, 2030, [("exp_month", "bad_month")]),
        (date(2025, 6, 15), -1, 2030, [("exp_month", "bad_month")]),
        (date(2025, 6, 15), 1, 2030, []),
        # A month that does not exist cannot be compared with today's.
        (date(2025, 6, 15), 0, 2025, [("exp_month", "bad_month")]),
        (date(2025, 6, 15), 13, 2024, [("exp_month", "bad_month"), ("exp_year", "expired")]),
    ],
)
def test_expiry(
    today: date, exp_month: int, exp_year: int, expected: list[tuple[str, str]]
) -> None:
    assert problems_of("4111111111111111", exp_month, exp_year, today=today) == expected


# --- Several problems, messages and types ------------------------------------------------


def test_every_problem_is_reported_in_field_order() -> None:
    with pytest.raises(CardInvalid) as caught:
        validate_card("9111111111111111", 13, 2020, today=TODAY)
    assert [(problem.field, problem.code) for problem in caught.value.problems] == [
        ("number", "unknown_brand"),
        ("number", "luhn_failed"),
        ("exp_month", "bad_month"),
        ("exp_year", "expired"),
    ]


def test_wrong_length_and_check_digit_are_reported_together() -> None:
    assert problems_of("41111111111111", 0, 2030) == [
        ("number", "bad_length"),
        ("number", "luhn_failed"),
        ("exp_month", "bad_month"),
    ]


def test_invalid_card_text_and_reprs_hold_no_digits_of_the_number() -> None:
    number = "4111111111111112"
    with pytest.raises(CardInvalid) as caught:
        validate_card(number, 0, 2020, today=TODAY)
    exc = caught.value
    for text in (str(exc), repr(exc), repr(exc.problems)):
        assert "1111" not in text
        assert "4111" not in text
    assert str(exc).startswith("card is invalid: number: the card number's check digit")


def test_valid_card_repr_leaves_the_number_out() -> None:
    card = validate_card("4111111111111111", 12, 2030, today=TODAY)
    assert "1111" not in repr(card)
    assert "visa" in repr(card)


def test_card_invalid_survives_pickling() -> None:
    problem = CardProblem("exp_month", "bad_month", "the expiry month must be from 1 to 12")
    restored = pickle.loads(pickle.dumps(CardInvalid([problem])))  # noqa: S301
    assert restored.problems == (problem,)
    assert str(restored) == str(CardInvalid([problem]))


def test_card_invalid_needs_a_problem() -> None:
    with pytest.raises(ValueError, match="at least one"):
        CardInvalid([])


@pytest.mark.parametrize(
    ("number", "exp_month", "exp_year", "name"),
    [
        (4111111111111111, 12, 2030, "number"),
        ("4111111111111111", "12", 2030, "exp_month"),
        ("4111111111111111", True, 2030, "exp_month"),
        ("4111111111111111", 12, 2030.0, "exp_year"),
    ],
)
def test_wrong_argument_types_are_programmer_errors(
    number: object, exp_month: object, exp_year: object, name: str
) -> None:
    with pytest.raises(TypeError, match=name):
        validate_card(number, exp_month, exp_year, today=TODAY)  # type: ignore[arg-type]


# --- Properties --------------------------------------------------------------------------


@st.composite
def visa_numbers(draw: st.DrawFn) -> str:
    length = draw(st.sampled_from([13, 16, 19]))
    body = draw(st.text(string.digits, min_size=length, max_size=length))
    return make_number("4", length, body)


@given(visa_numbers())
def test_luhn_valid_visa_numbers_pass_and_any_single_digit_change_fails(number: str) -> None:
    assert validate_card(number, 12, 2030, today=TODAY) == ValidCard(number, Brand.VISA, 12, 2030)
    for position, original in enumerate(number):
        for digit in string.digits.replace(original, ""):
            flipped = number[:position] + digit + number[position + 1 :]
            assert ("number", "luhn_failed") in problems_of(flipped)


@st.composite
def submitted_numbers(draw: st.DrawFn) -> str:
    """Plausible and implausible numbers: real brands, random digits, stray characters."""
    prefix, _ = draw(st.sampled_from(PREFIXES))
    valid = make_number(prefix, draw(st.integers(12, 19)), draw(st.text(string.digits)))
    return draw(
        st.one_of(
            st.just(valid),
            st.just(valid[:-1] + str((int(valid[-1]) + 1) % 10)),
            st.text(string.digits, max_size=25),
            st.text(string.digits + " -x٤", max_size=25),
        )
    )


@given(
    submitted_numbers(),
    st.integers(-2, 14),
    st.one_of(st.integers(-10, 10_000), st.integers(2020, 2080)),
)
def test_problems_never_echo_four_digits_of_the_number(
    number: str, exp_month: int, exp_year: int
) -> None:
    digits = "".join(char for char in number if char in string.digits)
    runs = {digits[start : start + 4] for start in range(len(digits) - 3)}
    try:
        validate_card(number, exp_month, exp_year, today=TODAY)
    except CardInvalid as exc:
        texts = [problem.message for problem in exc.problems] + [str(exc), repr(exc)]
    else:
        return
    for text in texts:
        assert not any(run in text for run in runs)
