"""Card-data screening of whole requests: bodies, paths and query strings.

Rules:
1. Every string of a JSON body is screened (keys, values, integers), before
   any validation that could echo input.
2. A refusal names field paths only, never the digits.
3. A body that is not JSON is screened as text, so a card number inside
   broken JSON is refused as a card number, not echoed by a parse error.
4. A body that validation refuses is screened in full before the refusal is
   made, so card data in it is refused as card data, whatever else is wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final, TypeVar
from urllib.parse import unquote, unquote_plus

import orjson
from pydantic import ValidationError

from strongroom.domain.cards import (
    Finding,
    contains_pan,
    is_sensitive_auth_key,
    raw_body_is_clean,
    raw_digit_run_longer_than,
    raw_digit_runs_are_clean,
    screen_document,
)
from strongroom.errors import CardDataRefused, FieldError, InvalidRequest

MAX_DIGIT_RUN: Final = 256

T = TypeVar("T")


def screen(body: bytes, *, card_fields: frozenset[str] = frozenset()) -> None:
    """Refuse any PAN or sensitive authentication data anywhere in a JSON body.

    ``card_fields`` are the paths (list indices written ``[]``) where a card
    number is expected, as the token vault's ``number``; everywhere else a card
    number is refused.

    Raises:
        CardDataRefused: ``sensitive_authentication_data`` or ``pan_detected``,
            naming the field paths and never the digits.
    """
    if not raw_body_is_clean(body):
        _screen_parsed(body, card_fields)


def _screen_parsed(body: bytes, card_fields: frozenset[str]) -> None:
    """``screen`` without the raw pre-filter: for a body it did not call clean."""
    if raw_digit_run_longer_than(body, MAX_DIGIT_RUN):
        # No field accepts hundreds of digits, and scanning such a run window by
        # window is the costliest input there is; refuse it before the walk.
        raise InvalidRequest(
            f"A value holds a run of more than {MAX_DIGIT_RUN} digits; no field accepts that."
        )
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        # Validation refuses unparseable bodies; screen their text first so a
        # card number inside broken JSON is still refused as one, unnamed.
        if contains_pan(body.decode("utf-8", errors="replace")):
            raise CardDataRefused(
                "pan_detected", "The request contains what looks like a card number."
            ) from None
        return
    try:
        findings = screen_document(document, allowed_pan_paths=card_fields)
    except ValueError:
        raise InvalidRequest("The request nests too deeply.") from None
    if findings:
        raise _refusal(findings)


def screen_and_validate(
    body: bytes,
    validate: Callable[[bytes], T],
    open_keys: Callable[[T], Iterable[str]],
    *,
    card_fields: frozenset[str] = frozenset(),
) -> T:
    """``validate(body)``, refusing card data first exactly as ``screen`` would.

    For a closed schema without floats: ``validate`` refuses unknown keys and
    any number that is not an integer, and ``open_keys`` lists the keys of a
    valid value that its sender chose (metadata keys, say). Once such a body
    has passed validation, a sensitive key can only be one of ``open_keys``,
    and no number can be a float whose digits were never written out, so for a
    body whose written digits hold no card number the rest of the screen is a
    look at ``open_keys``. That spares every valid body two scans of its bytes
    (the sensitive-key and exponent patterns): about three quarters of the
    screen's time on a batch of 100 events.

    Raises:
        CardDataRefused: as ``screen``, before any validation error.
        InvalidRequest: as ``screen``.
        pydantic.ValidationError: the body is free of card data but invalid.
    """
    digits_clean = raw_digit_runs_are_clean(body)
    if not digits_clean:
        # The pre-filter would fail on the same digits: go straight to the walk.
        _screen_parsed(body, card_fields)
    try:
        value = validate(body)
    except ValidationError:
        if digits_clean:
            screen(body, card_fields=card_fields)
        raise
    if digits_clean and any(is_sensitive_auth_key(key) for key in open_keys(value)):
        # The walk names the fields; it refuses this body.
        _screen_parsed(body, card_fields)
    return value


def _refusal(findings: list[Finding]) -> CardDataRefused:
    sad = [finding for finding in findings if finding.kind == "sensitive_authentication_data"]
    if sad:
        return CardDataRefused(
            "sensitive_authentication_data",
            "Card security codes, PINs and track data are never accepted.",
            tuple(FieldError(f.path or "body", "sensitive authentication data") for f in sad),
        )
    return CardDataRefused(
        "pan_detected",
        "A card number was found outside the card field; "
        "send card numbers only to the token vault.",
        tuple(FieldError(f.path or "body", "contains a card number") for f in findings),
    )


def screen_url(path: str, query_string: bytes) -> None:
    """Refuse a card number in a path segment or a query parameter.

    Raises:
        CardDataRefused: ``pan_detected``, naming ``path`` or ``query``.
    """
    places = []
    if contains_pan(unquote(path)):
        places.append(FieldError("path", "contains a card number"))
    if query_string and contains_pan(unquote_plus(query_string.decode("latin-1"))):
        places.append(FieldError("query", "contains a card number"))
    if places:
        raise CardDataRefused(
            "pan_detected",
            "A card number was found in the URL; card numbers never belong there.",
            tuple(places),
        )
