"""Field encryption: AES-256-GCM under a data key, bound to where the value lives.

A sealed value is self-describing text (docs/formats.md spells it out byte by
byte)::

    sr1:v<KEK version>:<DEK id>:<base64url(nonce ‖ ciphertext ‖ tag)>

Rules this module guarantees:

1. Every seal draws a fresh random 96-bit nonce; a data key is used for far
   fewer than 2^32 seals (``DataKeyService`` counts and rotates).
2. The associated data binds the header and a ``SealContext`` (tenant, table or
   topic, field, record id): a value copied to another row, field or tenant,
   or given another header, does not open.
3. Opening fails with one exception, ``Unreadable``, whatever went wrong.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

FORMAT: Final = "sr1"
DATA_KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
#: NIST SP 800-38D caps random-nonce GCM at 2^32 encryptions a key; we stop far earlier.
MAX_SEALS_PER_KEY: Final = 2**32
_SEPARATOR: Final = b"\x1f"
_HEADER: Final = re.compile(r"\Asr1:v([1-9][0-9]{0,8}):([A-Za-z0-9_]{1,64}):")


class Unreadable(Exception):
    """A sealed value could not be opened: wrong key, wrong context, or altered.

    Deliberately says nothing more.
    """

    def __init__(self) -> None:
        super().__init__("sealed value cannot be opened")


@dataclass(frozen=True, slots=True)
class SealContext:
    """Where a sealed value lives; part of its associated data."""

    tenant: str
    place: str
    field: str
    record_id: str

    def encoded(self) -> bytes:
        # Netstring-style length prefixes, so ("ab", "c") and ("a", "bc") never collide.
        t, p, f, r = self.tenant, self.place, self.field, self.record_id
        return f"{len(t)}.{t}{len(p)}.{p}{len(f)}.{f}{len(r)}.{r}".encode()


@dataclass(frozen=True, slots=True)
class SealedHeader:
    kek_version: int
    dek_id: str


def read_header(sealed: str) -> SealedHeader:
    """The KEK version and DEK id a sealed value names.

    Raises:
        Unreadable: the text is not a sealed value.
    """
    match = _HEADER.match(sealed)
    if match is None:
        raise Unreadable
    return SealedHeader(int(match.group(1)), match.group(2))


def is_sealed(value: str) -> bool:
    return _HEADER.match(value) is not None


class DataKey:
    """An unwrapped data key, ready to seal and open values.

    It never counts its own use; the owner of the key does, so the count can
    be made durable before the key is used.
    """

    __slots__ = ("_aead", "_header", "_header_bytes", "dek_id", "kek_version")

    def __init__(self, dek_id: str, kek_version: int, material: bytes) -> None:
        if len(material) != DATA_KEY_BYTES:
            raise ValueError(f"a data key must be {DATA_KEY_BYTES} bytes")
        if not re.fullmatch(r"[A-Za-z0-9_]{1,64}", dek_id):
            raise ValueError("a data key id is 1 to 64 letters, digits or underscores")
        if kek_version < 1:
            raise ValueError("a KEK version is a positive integer")
        self.dek_id = dek_id
        self.kek_version = kek_version
        self._aead = AESGCM(material)
        self._header = f"{FORMAT}:v{kek_version}:{dek_id}:"
        self._header_bytes = self._header.encode()

    def seal(self, plaintext: bytes, context: SealContext) -> str:
        nonce = os.urandom(NONCE_BYTES)
        aad = self._header_bytes + _SEPARATOR + context.encoded()
        body = nonce + self._aead.encrypt(nonce, plaintext, aad)
        return self._header + _b64(body)

    def open(self, sealed: str, context: SealContext) -> bytes:
        """The plaintext of a value this key sealed in ``context``.

        Raises:
            Unreadable: on any failure.
        """
        match = _HEADER.match(sealed)
        if match is None or match.group(2) != self.dek_id:
            raise Unreadable
        encoded = sealed[match.end() :]
        try:
            body = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except (binascii.Error, ValueError):
            raise Unreadable from None
        # The decoder forgives stray characters, the other alphabet and spare
        # bits; only the one canonical spelling of a sealed value opens.
        if len(body) < NONCE_BYTES + TAG_BYTES or _b64(body) != encoded:
            raise Unreadable
        # The header as written (not this key's version): a DEK rewrapped under a
        # newer KEK still opens what it sealed before.
        aad = sealed[: match.end()].encode() + _SEPARATOR + context.encoded()
        try:
            return self._aead.decrypt(body[:NONCE_BYTES], body[NONCE_BYTES:], aad)
        except InvalidTag:
            raise Unreadable from None


def _b64(body: bytes) -> str:
    return base64.urlsafe_b64encode(body).rstrip(b"=").decode()


def new_data_key_material() -> bytes:
    """Fresh random key material for a data key."""
    return AESGCM.generate_key(bit_length=DATA_KEY_BYTES * 8)
