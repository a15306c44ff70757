"""Card-data rules: find primary account numbers (PANs) and sensitive authentication data.

This module is pure (no I/O, standard library only) and runs on every request, so every
regular expression is compiled once at import and the common case (text with no long digit
run) is decided by a single regex search.

Invariants:

1. A PAN candidate is a maximal run of ASCII digits in which consecutive digits are joined
   by at most one separator, a single space or a single dash. The run is bounded by a
   non-digit (or the string edge) on both sides; letters next to the run do not stop
   detection, so "abc4111111111111111xyz" contains a PAN. Two separators in a row end a run.
2. A run of 13 to 19 digits is a PAN when its digits pass the Luhn check (ISO/IEC 7812-1).
3. A run of more than 19 digits without separators is some other long number, never a PAN.
4. A run that contains separators is split into its separator-delimited groups, and every
   contiguous sequence of whole groups holding 13 to 19 digits is tested with Luhn. So
   "4111 1111 1111 1111 1234" and "ref 1234-4111-1111-1111-1111" both contain a PAN.
   Invariant 3 is the one-group case of this rule.
5. Hex identifiers are not scanned: a canonical UUID (8-4-4-4-12 hex digits) or a run of 32
   or more hex characters (UUID hex, MD5, SHA-1, SHA-256 and longer digests), bounded on
   both sides by a non-alphanumeric character or the string edge, is blanked before the
   scan. Under invariants 1-4 alone about 0.3% of uuid4 strings and 0.4% of SHA-256 hex
   digests hold a Luhn-valid 13-19 digit run between hex letters, which would refuse that
   share of legitimate identifiers. The price is that a PAN written inside such a hex blob is
   missed. Blanking keeps positions, so a PAN next to an identifier
   ("4111111111111111-<uuid>") is still found; "abc4111111111111111xyz" is no hex blob.
6. Non-ASCII text is normalised with Unicode NFKC (so full-width digits are digits) and any
   remaining Unicode decimal digit (category Nd, e.g. Arabic-Indic) is read as its ASCII
   value before scanning, because ``int()`` and many downstream systems accept such digits.
   Separators stay exactly ' ' and '-' after NFKC (a no-break space becomes ' ').
7. Spans returned by ``find_pan_spans`` always refer to the caller's original string. For
   non-ASCII text each character is normalised on its own so that positions map back; a span
   then covers whole original characters, and may include a non-digit that the same
   character expands to (NFKC of U+2491 is "10."). Overlapping spans are merged, so spans
   are sorted and disjoint; ``mask_pans`` replaces each span with one mask and leaves every
   other character as it was.
8. Sensitive authentication data (SAD) keys are compared after NFKC, case folding and
   removal of every '-', '_' and ' ', so "CVV", "c-v-v", "Card-Verification-Value" and
   "track 2" all match. SAD keys are refused at every depth, even at allowed PAN paths.
9. ``screen_document`` reports findings in document order. Paths never echo user input
   beyond simple identifiers: a key that is not ``[A-Za-z_][A-Za-z0-9_]{0,63}``, or that
   contains a PAN, is shown as "<key>", so a PAN never appears in a path. A path that runs
   through a "<key>" segment never matches ``allowed_pan_paths``.
10. An ``int`` (not ``bool``) is a PAN when its decimal digits are. A finite ``float`` is
    screened by its integer part the same way, because JSON such as ``4111111111111111.0``
    or ``42e14`` decodes to a float that still carries the card number.
11. Nesting deeper than 64 containers raises ``ValueError``; the walk never recurses further.
    A value of a non-JSON type (or a non-str key) raises ``TypeError``, so nothing unscreened
    slips through.
12. ``raw_may_contain_pan_or_sad`` never returns False for a body in which ``screen_document``
    of the decoded JSON would find something. It may return True spuriously: it ignores
    separators, whitespace and '+' entirely, so it over-approximates every rule above.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate
from typing import Any, Final, Literal

__all__ = [
    "SENSITIVE_AUTH_KEYS",
    "Finding",
    "FindingKind",
    "contains_pan",
    "find_pan_spans",
    "is_sensitive_auth_key",
    "luhn_valid",
    "mask_pans",
    "raw_body_is_clean",
    "raw_digit_run_longer_than",
    "raw_may_contain_pan_or_sad",
    "screen_document",
]

FindingKind = Literal["pan_detected", "sensitive_authentication_data"]

SENSITIVE_AUTH_KEYS: Final[frozenset[str]] = frozenset(
    {
        "cvv",
        "cvc",
        "cvv2",
        "cvc2",
        "cav2",
        "cid",
        "csc",
        "pin",
        "pin_block",
        "pinblock",
        "track1",
        "track2",
        "track_1",
        "track_2",
        "track_data",
        "trackdata",
        "magstripe",
        "card_verification_value",
        "security_code",
    }
)

_MIN_PAN_DIGITS: Final = 13
_MAX_PAN_DIGITS: Final = 19
_MAX_DEPTH: Final = 64
_SMALLEST_PAN_INT: Final = 10 ** (_MIN_PAN_DIGITS - 1)
_LARGEST_PAN_INT: Final = 10**_MAX_PAN_DIGITS - 1

_KEY_SEPARATORS: Final = str.maketrans("", "", "-_ ")
_CANONICAL_SAD_KEYS: Final = frozenset(
    key.translate(_KEY_SEPARATORS) for key in SENSITIVE_AUTH_KEYS
)

# The leading [0-9] lets the regex engine skip non-digits quickly; the two lookbehinds then
# reject a start inside a run (after a digit, or after digit+separator), so a run that is too
# short is examined once rather than once per digit, which keeps the scan linear. After the
# first 13 digits the rest of the run is taken group by group, which is much cheaper for the
# engine than one optional separator per digit.
_RUN: Final = re.compile(
    r"[0-9](?<![0-9][0-9])(?<![0-9][ -][0-9])"
    rf"(?:[ -]?[0-9]){{{_MIN_PAN_DIGITS - 1}}}[0-9]*(?:[ -][0-9]+)*"
)
_HEX_IDENTIFIER: Final = re.compile(
    r"(?<![0-9A-Za-z])"
    r"(?:[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}|[0-9A-Fa-f]{32,})"
    r"(?![0-9A-Za-z])"
)
# Unicode \d is exactly category Nd; ASCII digits are excluded so the callback runs only for
# the rare non-ASCII digit.
_NON_ASCII_DIGIT: Final = re.compile(r"(?![0-9])\d")
_SIMPLE_KEY: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_DOUBLED: Final = str.maketrans("0123456789", "0246813579")

# The raw pre-filter works on one C-level translation of the body: every digit becomes "0",
# letters are lower-cased, and the bytes that the rules ignore or that may sit between tokens
# are deleted. Deleting only ever joins neighbours, so each check below matches a superset of
# what the precise rule needs; that is what makes the pre-filter safe.
_RAW_TABLE: Final = bytes.maketrans(
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"0000000000abcdefghijklmnopqrstuvwxyz"
)
_RAW_DELETE: Final = b" -_\t\r\n+"
_RAW_DIGIT_RUN: Final = b"0" * _MIN_PAN_DIGITS
# A JSON number with a non-negative exponent ends its exponent digits at ',', ']', '}' or the
# end of the body once whitespace is gone. Hex identifiers such as UUIDs ("550e8400-...") do
# not, because a string always closes with a quote, so they do not trip this check.
_RAW_EXPONENT: Final = re.compile(rb"0e0+(?:[,\]}]|\Z)")


def _alternation(words: Iterable[bytes]) -> bytes:
    """A regex matching exactly ``words``, shaped as a trie: ``c(?:vv|vc)`` for cvv, cvc.

    Python's regex engine tries the alternatives of a flat ``(?:cvv|cvc|...)`` one
    by one at every quote in the body; in a trie it reads each byte once. On a
    batch of 100 events this check took a half to a third of the time (two machines).
    """
    tree: dict[int, Any] = {}
    for word in words:
        node = tree
        for byte in word:
            node = node.setdefault(byte, {})
        node[-1] = {}
    return _trie_pattern(tree)


def _trie_pattern(node: dict[int, Any]) -> bytes:
    branches = [
        re.escape(bytes([byte])) + _trie_pattern(child)
        for byte, child in sorted(node.items())
        if byte != -1
    ]
    if not branches:
        return b""
    pattern = branches[0] if len(branches) == 1 else b"(?:" + b"|".join(branches) + b")"
    return b"(?:" + pattern + b")?" if -1 in node else pattern


_RAW_SAD_KEY: Final = re.compile(
    rb'"'
    + _alternation(
        name.translate(str.maketrans("123456789", "000000000")).encode("ascii")
        for name in _CANONICAL_SAD_KEYS
    )
    + rb'":'
)


@dataclass(frozen=True, slots=True)
class Finding:
    """One refused field: where it is, and why, never what it holds."""

    path: str
    kind: FindingKind


def is_sensitive_auth_key(key: str) -> bool:
    """Return True if ``key`` names sensitive authentication data (CVV, PIN, track data...)."""
    # NFKC leaves ASCII unchanged and casefold equals lower there, so ASCII keys, nearly all
    # of them, take the cheaper route.
    folded = key.lower() if key.isascii() else unicodedata.normalize("NFKC", key).casefold()
    return folded.replace("-", "").replace("_", "").replace(" ", "") in _CANONICAL_SAD_KEYS


def luhn_valid(digits: str) -> bool:
    """Return True if the non-empty ASCII digit string passes the Luhn (mod 10) check.

    Raises:
        ValueError: ``digits`` is empty or holds anything but ASCII '0'-'9'.
    """
    if not digits or not digits.isascii() or not digits.isdigit():
        raise ValueError("luhn_valid expects a non-empty string of ASCII digits")
    return _luhn(digits)


def _luhn(digits: str) -> bool:
    # Counting from the rightmost digit, every second digit is doubled (minus 9 if above 9);
    # the translation table does that doubling in C.
    plain = digits[-1::-2]
    doubled = digits[-2::-2].translate(_DOUBLED)
    return (sum(map(int, plain)) + sum(map(int, doubled))) % 10 == 0


def _scan(text: str) -> Iterator[tuple[int, int]]:
    """Yield the span of every PAN made of ASCII digits in ``text``; spans may overlap."""
    first = _first_run(text)
    if first is not None:
        yield from _scan_from(text, first)


def _first_run(text: str) -> re.Match[str] | None:
    if len(text) < _MIN_PAN_DIGITS:
        return None
    return _RUN.search(text)


def _scan_from(text: str, first: re.Match[str]) -> Iterator[tuple[int, int]]:
    # Blanking with letters keeps every position, so spans still index ``text``, and no run
    # can start before the first one already found.
    text = _HEX_IDENTIFIER.sub(_blank, text)
    for match in _RUN.finditer(text, first.start()):
        run = match.group()
        if " " in run or "-" in run:
            yield from _scan_grouped(run, match.start())
        elif len(run) <= _MAX_PAN_DIGITS and _luhn(run):
            yield match.span()


def _blank(match: re.Match[str]) -> str:
    return "x" * (match.end() - match.start())


def _scan_grouped(run: str, base: int) -> Iterator[tuple[int, int]]:
    """Yield every window of whole groups of ``run`` that is a PAN (invariant 4)."""
    # Separators are exactly one character, so group i starts at its digit offset plus i;
    # splitting in C avoids a match object per group.
    sizes = list(map(len, run.replace("-", " ").split(" ")))
    digits = run.replace(" ", "").replace("-", "")
    plain = list(map(int, digits))
    doubled = list(map(int, digits.translate(_DOUBLED)))
    # A window's Luhn sum keeps its last digit plain and alternates from there, so which
    # digits are doubled depends only on the parity of the window's last index. Two prefix
    # sums, one per parity, give each window's sum in constant time; without them a long run
    # of one-digit groups (an easy request to send) costs about ten times as much.
    plain_at_even = plain.copy()
    plain_at_even[1::2] = doubled[1::2]
    plain_at_odd = doubled
    plain_at_odd[1::2] = plain[1::2]
    prefix_even = [0, *accumulate(plain_at_even)]
    prefix_odd = [0, *accumulate(plain_at_odd)]
    bounds = [0, *accumulate(sizes)]
    first = 0
    for last in range(len(sizes)):
        end = bounds[last + 1]
        while end - bounds[first] > _MAX_PAN_DIGITS:
            first += 1
        prefix = prefix_odd if end % 2 == 0 else prefix_even
        total = prefix[end]
        candidate = first
        while candidate <= last and end - bounds[candidate] >= _MIN_PAN_DIGITS:
            if (total - prefix[bounds[candidate]]) % 10 == 0:
                yield base + bounds[candidate] + candidate, base + end + last
            candidate += 1


def _to_ascii_digit(match: re.Match[str]) -> str:
    return str(unicodedata.decimal(match.group()))


def _fold(text: str) -> str:
    normalised = unicodedata.normalize("NFKC", text)
    if normalised.isascii():
        return normalised
    return _NON_ASCII_DIGIT.sub(_to_ascii_digit, normalised)


# Single characters recur across requests and can never hold a PAN on their own, so caching
# their folded form is both worthwhile and safe to keep in memory.
@lru_cache(maxsize=4096)
def _fold_char(char: str) -> str:
    return _fold(char)


def _merge(spans: Iterator[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def contains_pan(text: str) -> bool:
    """Return True if ``text`` holds at least one PAN (see the module invariants)."""
    if not text.isascii():
        text = _fold(text)
    # Most strings on the hot path hold no long digit run; decide those without a generator.
    first = _first_run(text)
    return first is not None and next(_scan_from(text, first), None) is not None


def may_contain_pan(text: str) -> bool:
    """Cheap conservative pre-filter; False means ``find_pan_spans(text)`` is empty.

    False only for ASCII text without 13 consecutive characters that are digits,
    spaces or dashes, which every PAN in it would need. Texts joined by newlines
    keep that property: a newline neither starts nor continues such a stretch,
    so a joined text is False only if every part is.
    """
    return not text.isascii() or _RUN_NEEDLE in text.encode("ascii").translate(_RUN_TABLE)


def find_pan_spans(text: str) -> list[tuple[int, int]]:
    """Return the sorted, disjoint ``(start, end)`` spans of ``text`` that hold a PAN.

    Spans index the original ``text`` even when it is not ASCII (invariant 7).
    """
    if text.isascii():
        return _merge(_scan(text))
    # Whole-string normalisation is done in C and decides the common "no PAN" case; the
    # per-character pass that maps positions back is only paid when there is something to map.
    if next(_scan(_fold(text)), None) is None:
        return []
    pieces = [_fold_char(char) for char in text]
    origin: list[int] = []
    for index, piece in enumerate(pieces):
        origin.extend([index] * len(piece))
    folded = "".join(pieces)
    return _merge((origin[start], origin[end - 1] + 1) for start, end in _scan(folded))


def mask_pans(text: str, mask: str = "[PAN REDACTED]") -> str:
    """Return ``text`` with every PAN span replaced by ``mask`` and all else unchanged."""
    spans = find_pan_spans(text)
    if not spans:
        return text
    parts: list[str] = []
    cursor = 0
    for start, end in spans:
        parts.append(text[cursor:start])
        parts.append(mask)
        cursor = end
    parts.append(text[cursor:])
    return "".join(parts)


def raw_may_contain_pan_or_sad(body: bytes) -> bool:
    """Cheap conservative pre-filter over a raw JSON body; False means certainly clean.

    True when the body has a ``\\u`` escape (which could spell digits or a key), any
    non-ASCII byte (full-width or other Unicode digits), a run of 13 or more digits, a JSON
    number with a non-negative exponent (which can decode to a float of 13 or more digits),
    or a quoted sensitive key followed by ':'. The last three are matched after separators
    and whitespace are dropped, so they may also fire on text that only looks close.
    """
    if not body.isascii() or b"\\u" in body:
        return True
    folded = body.translate(_RAW_TABLE, _RAW_DELETE)
    return (
        _RAW_DIGIT_RUN in folded
        or _RAW_EXPONENT.search(folded) is not None
        or _RAW_SAD_KEY.search(folded) is not None
    )


# Digits and the two separators become "0" and every other byte keeps its place, so a
# candidate run is a run of "0"s found with C-speed ``find`` at its original offset.
_RUN_TABLE: Final = bytes.maketrans(b"0123456789 -", b"0" * 12)
_RUN_NEEDLE: Final = b"0" * _MIN_PAN_DIGITS
_ZEROS: Final = re.compile(rb"0+")
# Runs longer than this are left to the document walk (and to the caller's size rules)
# instead of being sliced and scanned here.
_LONGEST_RAW_RUN: Final = 1024


def _zero_runs(zeros: bytes, needle: bytes) -> Iterator[tuple[int, int]]:
    start = zeros.find(needle)
    while start != -1:
        match = _ZEROS.match(zeros, start)
        assert match is not None
        yield start, match.end()
        start = zeros.find(needle, match.end())


def raw_body_is_clean(body: bytes) -> bool:
    """True only when ``screen_document`` of the decoded body would find nothing.

    False means "walk the document": the body may or may not hold card data. This
    decides the common case without decoding the body: in ASCII JSON with no escapes,
    the nearest quotes around a digit run delimit exactly the string holding it (or the
    gap between strings where a number sits), so ``contains_pan`` of that slice gives
    the walk's verdict for that run (invariants 1-5 and 10).
    """
    if not raw_digit_runs_are_clean(body):
        return False
    folded = body.translate(_RAW_TABLE, _RAW_DELETE)
    return _RAW_SAD_KEY.search(folded) is None and _RAW_EXPONENT.search(folded) is None


def raw_digit_runs_are_clean(body: bytes) -> bool:
    """The half of ``raw_body_is_clean`` about digits written out: True only when
    the body is ASCII without escapes and no run of digits in it lies in a
    string, key or number that holds a PAN.

    It says nothing of sensitive keys or of numbers in exponent form
    (``4.111e15``); a caller that rules those out otherwise (a closed schema
    without floats) may skip the rest of the screen.
    """
    if not body.isascii() or b"\\" in body:
        return False
    for start, end in _zero_runs(body.translate(_RUN_TABLE), _RUN_NEEDLE):
        if end - start > _LONGEST_RAW_RUN:
            return False
        left = body.rfind(b'"', 0, start) + 1
        right = body.find(b'"', end)
        if contains_pan(body[left : right if right != -1 else len(body)].decode("ascii")):
            return False
    return True


def raw_digit_run_longer_than(body: bytes, digits: int) -> bool:
    """True when the raw body holds more than ``digits`` digits joined by single separators."""
    pattern = re.compile(rb"[0-9](?:[ -]?[0-9]){%d}" % digits)
    for start, end in _zero_runs(body.translate(_RUN_TABLE), b"0" * (digits + 1)):
        if pattern.search(body, start, end) is not None:
            return True
    return False


def _int_is_pan(value: int) -> bool:
    magnitude = abs(value)
    # Bounds first: this skips the common small numbers and never converts a huge int to
    # text, which CPython refuses above 4300 digits.
    if magnitude < _SMALLEST_PAN_INT or magnitude > _LARGEST_PAN_INT:
        return False
    return _luhn(str(magnitude))


def _key_segment(key: str, key_has_pan: bool) -> str:
    if key_has_pan or _SIMPLE_KEY.fullmatch(key) is None:
        return "<key>"
    return key


def _join(parent: str, segment: str) -> str:
    return f"{parent}.{segment}" if parent else segment


def screen_document(
    doc: object, *, allowed_pan_paths: frozenset[str] = frozenset()
) -> list[Finding]:
    """Return every PAN and sensitive-authentication-data finding in a parsed JSON value.

    Args:
        doc: A value as produced by a JSON parser: dict (with str keys), list, str, int,
            float, bool or None.
        allowed_pan_paths: Paths, with list indices written "[]" (e.g. "events[].card.number"),
            where a PAN value is expected and not reported. SAD keys are reported regardless.

    Raises:
        ValueError: The document nests deeper than 64 containers.
        TypeError: The document holds a value or key of a non-JSON type.
    """
    findings: list[Finding] = []
    _walk(doc, "", "", 0, allowed_pan_paths, findings)
    return findings


def _walk(
    value: object,
    path: str,
    pattern: str | None,
    depth: int,
    allowed: frozenset[str],
    findings: list[Finding],
) -> None:
    # ``pattern`` is the path with list indices written "[]"; it is None once the path runs
    # through a "<key>" segment, because such a path cannot name an allowed field.
    if isinstance(value, str):
        if contains_pan(value) and pattern not in allowed:
            findings.append(Finding(path, "pan_detected"))
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int):
        if _int_is_pan(value) and pattern not in allowed:
            findings.append(Finding(path, "pan_detected"))
    elif isinstance(value, float):
        if math.isfinite(value) and _int_is_pan(int(value)) and pattern not in allowed:
            findings.append(Finding(path, "pan_detected"))
    elif isinstance(value, dict):
        if depth >= _MAX_DEPTH:
            raise ValueError(f"document nests deeper than {_MAX_DEPTH} levels")
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"object keys must be str, not {type(key).__name__}")
            key_has_pan = contains_pan(key)
            segment = _key_segment(key, key_has_pan)
            child_path = _join(path, segment)
            child_pattern = (
                None if pattern is None or segment == "<key>" else _join(pattern, segment)
            )
            if is_sensitive_auth_key(key):
                findings.append(Finding(child_path, "sensitive_authentication_data"))
            if key_has_pan:
                findings.append(Finding(child_path, "pan_detected"))
            _walk(item, child_path, child_pattern, depth + 1, allowed, findings)
    elif isinstance(value, list):
        if depth >= _MAX_DEPTH:
            raise ValueError(f"document nests deeper than {_MAX_DEPTH} levels")
        child_pattern = None if pattern is None else f"{pattern}[]"
        for index, item in enumerate(value):
            _walk(item, f"{path}[{index}]", child_pattern, depth + 1, allowed, findings)
    else:
        raise TypeError(f"not a JSON value: {type(value).__name__}")
