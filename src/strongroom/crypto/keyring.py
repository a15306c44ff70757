"""The local key-encryption keyring: versioned KEKs that wrap data keys.

Rules this module guarantees:

1. A wrapped data key names the KEK version that wrapped it
   (``lk1:v<N>:<base64url(nonce ‖ ciphertext ‖ tag)>``), and that header is
   authenticated: a wrapping relabelled with another version does not open.
2. Rotation adds a version; old versions stay for unwrapping until the
   minimum decryption version passes them.
3. The keyring's serialized form is JSON; with a master key it is sealed
   under it (AES-256-GCM), so the file alone reveals nothing.
4. Unwrapping fails with one exception, ``Unreadable``.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from dataclasses import dataclass, field
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from strongroom.crypto.envelope import NONCE_BYTES, Unreadable

KEK_BYTES: Final = 32
MASTER_KEY_BYTES: Final = 32
_WRAPPED: Final = re.compile(r"\Alk1:v([1-9][0-9]{0,8}):([A-Za-z0-9_-]+)\Z")
_SEALED_KEYRING_AAD: Final = b"strongroom keyring v1"


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parse_master_key(text: str) -> bytes:
    """Decode a master key given as base64url.

    Raises:
        ValueError: it is not base64url of exactly 32 bytes.
    """
    try:
        raw = _b64decode(text.strip())
    except (binascii.Error, ValueError):
        raise ValueError("the master key must be base64url-encoded") from None
    if len(raw) != MASTER_KEY_BYTES:
        raise ValueError(f"the master key must be {MASTER_KEY_BYTES} bytes, base64url-encoded")
    return raw


def new_master_key() -> str:
    """A fresh master key, base64url-encoded (what ``STRONGROOM_MASTER_KEY`` holds)."""
    return _b64encode(os.urandom(MASTER_KEY_BYTES))


def wrapped_version(wrapped: str) -> int:
    """The KEK version a local wrapping names.

    Raises:
        Unreadable: it is not a local wrapping.
    """
    match = _WRAPPED.match(wrapped)
    if match is None:
        raise Unreadable
    return int(match.group(1))


@dataclass(slots=True)
class Keyring:
    """KEK versions (1, 2, …) and the oldest one allowed to unwrap."""

    versions: dict[int, bytes] = field(default_factory=dict)
    min_decryption_version: int = 1

    @classmethod
    def create(cls) -> Keyring:
        return cls({1: AESGCM.generate_key(bit_length=KEK_BYTES * 8)})

    @property
    def latest(self) -> int:
        return max(self.versions)

    def rotate(self) -> int:
        version = self.latest + 1
        self.versions[version] = AESGCM.generate_key(bit_length=KEK_BYTES * 8)
        return version

    def wrap(self, data_key: bytes) -> str:
        version = self.latest
        header = f"lk1:v{version}:"
        nonce = os.urandom(NONCE_BYTES)
        body = AESGCM(self.versions[version]).encrypt(nonce, data_key, header.encode())
        return header + _b64encode(nonce + body)

    def unwrap(self, wrapped: str) -> bytes:
        """Raises ``Unreadable`` when unknown, altered, or below the minimum version."""
        match = _WRAPPED.match(wrapped)
        if match is None:
            raise Unreadable
        version = int(match.group(1))
        kek = self.versions.get(version)
        if kek is None or version < self.min_decryption_version:
            raise Unreadable
        try:
            body = _b64decode(match.group(2))
            header = wrapped[: match.start(2)].encode()
            return AESGCM(kek).decrypt(body[:NONCE_BYTES], body[NONCE_BYTES:], header)
        except (binascii.Error, ValueError, InvalidTag):
            raise Unreadable from None

    def serialize(self, master_key: bytes | None) -> bytes:
        document = json.dumps(
            {
                "format": "strongroom-keyring-v1",
                "min_decryption_version": self.min_decryption_version,
                "versions": {str(v): _b64encode(k) for v, k in sorted(self.versions.items())},
            },
            indent=1,
        ).encode()
        if master_key is None:
            return document
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(master_key).encrypt(nonce, document, _SEALED_KEYRING_AAD)
        return json.dumps({"sealed": _b64encode(nonce + sealed)}).encode()

    @staticmethod
    def is_sealed(raw: bytes) -> bool:
        return raw.lstrip().startswith(b'{"sealed"')

    @classmethod
    def deserialize(cls, raw: bytes, master_key: bytes | None) -> Keyring:
        """Read a keyring file, sealed or not.

        Raises:
            ValueError: one sentence saying what is wrong (not a keyring, sealed
                but no master key given, wrong master key).
        """
        try:
            document = json.loads(raw)
        except ValueError:
            raise ValueError("the keyring file is not valid JSON") from None
        if not isinstance(document, dict):
            raise ValueError("the keyring file is not a keyring")
        if "sealed" in document:
            if master_key is None:
                raise ValueError("the keyring is sealed: set STRONGROOM_MASTER_KEY")
            try:
                body = _b64decode(str(document["sealed"]))
                plain = AESGCM(master_key).decrypt(
                    body[:NONCE_BYTES], body[NONCE_BYTES:], _SEALED_KEYRING_AAD
                )
            except (binascii.Error, ValueError, InvalidTag):
                raise ValueError("STRONGROOM_MASTER_KEY does not open the keyring") from None
            document = json.loads(plain)
        try:
            versions = {int(v): _b64decode(k) for v, k in document["versions"].items()}
            minimum = int(document["min_decryption_version"])
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ValueError("the keyring file is not a keyring") from None
        if not versions or any(len(k) != KEK_BYTES for k in versions.values()):
            raise ValueError("the keyring file holds no valid key")
        return cls(versions, minimum)
