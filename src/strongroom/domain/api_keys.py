"""The managed API key format: recognisable, self-checking, with a public id.

    sr_live_ or sr_test_  +  32 random base62 characters  +  6-character checksum

The first 12 random characters are the key's public id (``key_`` + them): the
lookup handle, safe to log and show. The other 20 (about 119 bits) stay
secret. The checksum is CRC-32 of everything before it, in base62, so a
mistyped key is refused before any lookup and secret scanners can recognise
a real key with few false positives.
"""

from __future__ import annotations

import re
import secrets
import zlib
from dataclasses import dataclass
from typing import Final, Literal

BASE62: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
RANDOM_LENGTH: Final = 32
CHECKSUM_LENGTH: Final = 6
ID_LENGTH: Final = 12
KEY_ID_PREFIX: Final = "key_"
KEY_PATTERN: Final = re.compile(r"^sr_(live|test)_([0-9A-Za-z]{32})([0-9A-Za-z]{6})$")

Mode = Literal["live", "test"]


@dataclass(frozen=True, slots=True)
class ParsedKey:
    mode: Mode
    key_id: str


def _base62(number: int, width: int) -> str:
    digits = []
    while number:
        number, remainder = divmod(number, 62)
        digits.append(BASE62[remainder])
    return "".join(reversed(digits)).rjust(width, "0")


def checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), CHECKSUM_LENGTH)


def generate(mode: Mode = "live") -> str:
    """A new random key of the given mode."""
    random_part = "".join(secrets.choice(BASE62) for _ in range(RANDOM_LENGTH))
    body = f"sr_{mode}_{random_part}"
    return body + checksum(body)


def parse(key: str) -> ParsedKey | None:
    """The key's mode and public id, or None when it is not a well-formed managed key."""
    match = KEY_PATTERN.match(key)
    if match is None:
        return None
    mode, random_part, check = match.groups()
    if not secrets.compare_digest(checksum(key[:-CHECKSUM_LENGTH]), check):
        return None
    return ParsedKey(mode, KEY_ID_PREFIX + random_part[:ID_LENGTH])  # type: ignore[arg-type]


def looks_managed(key: str) -> bool:
    """True when the key has the managed prefix, whatever its checksum."""
    return key.startswith(("sr_live_", "sr_test_"))
