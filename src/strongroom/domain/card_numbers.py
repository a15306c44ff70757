"""Validate a payment card submitted to the token vault: number, expiry month and year.

This module is pure (no I/O, standard library only). ``validate_card`` either returns a
``ValidCard`` or raises ``CardInvalid`` with one ``CardProblem`` per failing rule, so a
caller can show every mistake at once instead of one per attempt.

Rules:

1. The number is ASCII digits only: no spaces, dashes or other digits ("not_digits").
2. The number has 12 to 19 digits ("bad_length"). Rules 3-5 apply only once 1 and 2 hold.
3. The brand is found from the issuer identification number (IIN), the leading digits, in
   ``_IIN_RANGES``; a prefix outside every range is "unknown_brand".
4. The length must be one the brand issues ("bad_length"), e.g. 15 for American Express.
5. The number passes the Luhn check ("luhn_failed"). This holds for every brand. Some real
   UnionPay 62-series cards are not Luhn-valid; the vault refuses them anyway, because one
   rule for all brands catches typing mistakes and is simpler to reason about.
6. The expiry month is 1 to 12 ("bad_month").
7. The expiry year is written with four digits and is at most 50 years after today's year
   ("bad_year").
8. A card is valid through the last day of its expiry month, so a card expiring this month
   is accepted. An earlier expiry is "expired", reported on ``exp_year`` when the year has
   passed and on ``exp_month`` when only the month has.
9. A problem names its field and says what to fix, but never holds the number or any digit
   of it; ``ValidCard``'s repr leaves the number out too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Final

from strongroom.domain.cards import luhn_valid

__all__ = [
    "Brand",
    "CardInvalid",
    "CardProblem",
    "ValidCard",
    "brand_of",
    "validate_card",
]


class Brand(StrEnum):
    VISA = "visa"
    MASTERCARD = "mastercard"
    AMEX = "amex"
    DISCOVER = "discover"
    JCB = "jcb"
    UNIONPAY = "unionpay"
    DINERS = "diners"
    MAESTRO = "maestro"


_MIN_DIGITS: Final = 12
_MAX_DIGITS: Final = 19
_YEARS_AHEAD: Final = 50

# (first prefix, last prefix, brand), both ends with the same number of digits. The first
# matching row wins, so rows are ordered from the longest prefix to the shortest; that is
# what lets the Discover co-brand 622126-622925 win over UnionPay's 62.
_IIN_RANGES: Final[tuple[tuple[str, str, Brand], ...]] = (
    ("622126", "622925", Brand.DISCOVER),
    ("2221", "2720", Brand.MASTERCARD),
    ("3528", "3589", Brand.JCB),
    ("5018", "5018", Brand.MAESTRO),
    ("5020", "5020", Brand.MAESTRO),
    ("5038", "5038", Brand.MAESTRO),
    ("5893", "5893", Brand.MAESTRO),
    ("6011", "6011", Brand.DISCOVER),
    ("6304", "6304", Brand.MAESTRO),
    ("6759", "6759", Brand.MAESTRO),
    ("6761", "6763", Brand.MAESTRO),
    ("300", "305", Brand.DINERS),
    ("644", "649", Brand.DISCOVER),
    ("34", "34", Brand.AMEX),
    ("36", "36", Brand.DINERS),
    ("37", "37", Brand.AMEX),
    ("38", "39", Brand.DINERS),
    ("51", "55", Brand.MASTERCARD),
    ("62", "62", Brand.UNIONPAY),
    ("65", "65", Brand.DISCOVER),
    ("81", "81", Brand.UNIONPAY),
    ("4", "4", Brand.VISA),
)

_LENGTHS: Final[dict[Brand, tuple[int, ...]]] = {
    Brand.VISA: (13, 16, 19),
    Brand.MASTERCARD: (16,),
    Brand.AMEX: (15,),
    Brand.DISCOVER: tuple(range(16, 20)),
    Brand.JCB: tuple(range(16, 20)),
    Brand.UNIONPAY: tuple(range(16, 20)),
    Brand.DINERS: tuple(range(14, 20)),
    Brand.MAESTRO: tuple(range(12, 20)),
}

_NAMES: Final[dict[Brand, str]] = {
    Brand.VISA: "Visa",
    Brand.MASTERCARD: "Mastercard",
    Brand.AMEX: "American Express",
    Brand.DISCOVER: "Discover",
    Brand.JCB: "JCB",
    Brand.UNIONPAY: "UnionPay",
    Brand.DINERS: "Diners Club",
    Brand.MAESTRO: "Maestro",
}

# Every range keeps one first digit, so grouping rows by it (in table order) leaves at most
# a handful to compare and keeps a lookup well under a microsecond.
_BY_FIRST_DIGIT: Final[dict[str, tuple[tuple[int, str, str, Brand], ...]]] = {
    digit: tuple(
        (len(low), low, high, brand) for low, high, brand in _IIN_RANGES if low[0] == digit
    )
    for digit in "0123456789"
}


def _spell_lengths(lengths: tuple[int, ...]) -> str:
    if len(lengths) == 1:
        return str(lengths[0])
    if len(lengths) > 2 and lengths == tuple(range(lengths[0], lengths[-1] + 1)):
        return f"{lengths[0]} to {lengths[-1]}"
    return ", ".join(map(str, lengths[:-1])) + f" or {lengths[-1]}"


_LENGTH_RULES: Final[dict[Brand, str]] = {
    brand: f"{_NAMES[brand]} numbers have {_spell_lengths(lengths)} digits"
    for brand, lengths in _LENGTHS.items()
}


@dataclass(frozen=True, slots=True)
class CardProblem:
    """One failing rule: which field, a stable code, and a sentence saying what to fix.

    ``field`` is "number", "exp_month" or "exp_year"; ``code`` is one of "not_digits",
    "bad_length", "unknown_brand", "luhn_failed", "bad_month", "bad_year" or "expired".
    Neither the code nor the message ever holds the number or any digit of it.
    """

    field: str
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class ValidCard:
    """A card that passed ``validate_card``; the number is digits only."""

    # The number stays out of the repr so that logging a card never writes it out.
    number: str = dataclasses.field(repr=False)
    brand: Brand
    exp_month: int
    exp_year: int

    @property
    def last4(self) -> str:
        return self.number[-4:]

    @property
    def bin6(self) -> str:
        return self.number[:6]


class CardInvalid(Exception):
    """Raised by ``validate_card`` when any rule fails; ``problems`` lists every failure.

    Problems come in field order (number, exp_month, exp_year). Neither they nor the
    exception's text hold any digit of the number.
    """

    problems: tuple[CardProblem, ...]

    def __init__(self, problems: Iterable[CardProblem]) -> None:
        self.problems = tuple(problems)
        if not self.problems:
            raise ValueError("CardInvalid needs at least one CardProblem")
        # Passing the problems on as the only argument keeps the exception picklable.
        super().__init__(self.problems)

    def __str__(self) -> str:
        return "card is invalid: " + "; ".join(
            f"{problem.field}: {problem.message}" for problem in self.problems
        )


def _is_ascii_digits(text: str) -> bool:
    # str.isdigit alone also accepts superscripts and other scripts' digits.
    return text.isascii() and text.isdigit()


def _brand(digits: str) -> Brand | None:
    for size, low, high, brand in _BY_FIRST_DIGIT[digits[0]]:
        if len(digits) >= size and low <= digits[:size] <= high:
            return brand
    return None


def brand_of(digits: str) -> Brand | None:
    """Return the brand whose IIN range holds the leading digits, or None if none does.

    ``digits`` is a whole number or its leading digits; a range whose prefix is longer
    than ``digits`` does not match, so pass at least six digits for a firm answer.

    Raises:
        ValueError: ``digits`` is empty or holds anything but ASCII '0'-'9'.
    """
    if not _is_ascii_digits(digits):
        raise ValueError("brand_of expects a non-empty string of ASCII digits")
    return _brand(digits)


def _number_problems(number: str) -> tuple[list[CardProblem], Brand | None]:
    if not _is_ascii_digits(number):
        message = "the card number must hold only the digits 0 to 9, with no spaces or dashes"
        return [CardProblem("number", "not_digits", message)], None
    length = len(number)
    if not _MIN_DIGITS <= length <= _MAX_DIGITS:
        message = (
            f"card numbers have {_MIN_DIGITS} to {_MAX_DIGITS} digits, and this one has {length}"
        )
        return [CardProblem("number", "bad_length", message)], None
    problems: list[CardProblem] = []
    brand = _brand(number)
    if brand is None:
        message = "the card number does not start like any supported brand: " + ", ".join(
            _NAMES.values()
        )
        problems.append(CardProblem("number", "unknown_brand", message))
    elif length not in _LENGTHS[brand]:
        message = f"{_LENGTH_RULES[brand]}, and this one has {length}"
        problems.append(CardProblem("number", "bad_length", message))
    if not luhn_valid(number):
        message = "the card number's check digit does not match; look for a mistyped digit"
        problems.append(CardProblem("number", "luhn_failed", message))
    return problems, brand


def _expiry_problems(exp_month: int, exp_year: int, today: date) -> list[CardProblem]:
    problems: list[CardProblem] = []
    month_ok = 1 <= exp_month <= 12
    if not month_ok:
        problems.append(
            CardProblem("exp_month", "bad_month", "the expiry month must be from 1 to 12")
        )
    if exp_year < 1000:
        message = "the expiry year must be written in full, with four digits"
        problems.append(CardProblem("exp_year", "bad_year", message))
    elif exp_year > today.year + _YEARS_AHEAD:
        message = f"the expiry year must be at most {_YEARS_AHEAD} years from now"
        problems.append(CardProblem("exp_year", "bad_year", message))
    elif exp_year < today.year:
        problems.append(CardProblem("exp_year", "expired", "the card's expiry year has passed"))
    elif month_ok and exp_year == today.year and exp_month < today.month:
        message = "the card expired at the end of its expiry month, which has passed"
        problems.append(CardProblem("exp_month", "expired", message))
    return problems


def validate_card(number: str, exp_month: int, exp_year: int, *, today: date) -> ValidCard:
    """Return the card when every rule in the module docstring holds.

    ``today`` is the date in the caller's chosen time zone; the card is valid through the
    last day of its expiry month.

    Raises:
        CardInvalid: One or more rules fail; its ``problems`` lists all of them.
        TypeError: ``number`` is not a str, or a month or year is not an int.
    """
    if not isinstance(number, str):
        raise TypeError(f"number must be a str, not {type(number).__name__}")
    for name, value in (("exp_month", exp_month), ("exp_year", exp_year)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    problems, brand = _number_problems(number)
    problems.extend(_expiry_problems(exp_month, exp_year, today))
    if problems or brand is None:
        raise CardInvalid(problems)
    return ValidCard(number, brand, exp_month, exp_year)
