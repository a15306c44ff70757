"""Signed checkpoints of the audit log, in the C2SP signed-note format.

A checkpoint commits to the whole log at one size. Its text (the note body) is

    <origin>
    <tree size, decimal>
    <root hash, standard base64>
    timestamp <unix seconds>

followed by a blank line and one signature line

    — <key name> <base64(key id (4 bytes) || Ed25519 signature (64 bytes))>

The key id is the first 4 bytes of SHA-256(key name || 0x0A || 0x01 || public
key), 0x01 being the signed-note type of Ed25519. The signature covers the body
exactly, including its final newline. See docs/formats.md.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Final

SIGNATURE_PREFIX: Final = "\u2014 "
ED25519_TYPE: Final = b"\x01"


class CheckpointError(ValueError):
    """Raised when a note cannot be parsed as a checkpoint."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    origin: str
    tree_size: int
    root_hash: bytes
    timestamp: int

    def body(self) -> str:
        root = base64.b64encode(self.root_hash).decode()
        return f"{self.origin}\n{self.tree_size}\n{root}\ntimestamp {self.timestamp}\n"


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    checkpoint: Checkpoint
    key_name: str
    key_id: bytes
    signature: bytes

    def text(self) -> str:
        blob = base64.b64encode(self.key_id + self.signature).decode()
        return f"{self.checkpoint.body()}\n{SIGNATURE_PREFIX}{self.key_name} {blob}\n"


def key_id(key_name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(key_name.encode() + b"\n" + ED25519_TYPE + public_key).digest()[:4]


def verifier_key(key_name: str, public_key: bytes) -> str:
    """The signed-note verifier key string: ``name+hex(key id)+base64(0x01 || key)``."""
    encoded = base64.b64encode(ED25519_TYPE + public_key).decode()
    return f"{key_name}+{key_id(key_name, public_key).hex()}+{encoded}"


def parse(text: str) -> SignedCheckpoint:
    """Parse a signed checkpoint note (signature not verified here).

    Raises:
        CheckpointError: the text is not a well-formed checkpoint note.
    """
    body, separator, signatures = text.partition("\n\n")
    if not separator:
        raise CheckpointError("a checkpoint note has a body, a blank line and a signature")
    lines = body.split("\n")
    if len(lines) != 4 or not lines[3].startswith("timestamp "):
        raise CheckpointError("a checkpoint body has origin, size, root hash and timestamp lines")
    try:
        size = int(lines[1])
        root = base64.b64decode(lines[2], validate=True)
        timestamp = int(lines[3].removeprefix("timestamp "))
    except ValueError as exc:
        raise CheckpointError("a checkpoint's size, root or timestamp is malformed") from exc
    canonical = str(size) == lines[1] and str(timestamp) == lines[3].removeprefix("timestamp ")
    if size < 0 or len(root) != hashlib.sha256().digest_size or not canonical:
        raise CheckpointError("a checkpoint's size, root hash or timestamp is not canonical")
    signature_line = signatures.rstrip("\n").split("\n")[0]
    if not signature_line.startswith(SIGNATURE_PREFIX):
        raise CheckpointError("the signature line must start with an em dash and a space")
    name, _, blob = signature_line.removeprefix(SIGNATURE_PREFIX).rpartition(" ")
    try:
        raw = base64.b64decode(blob, validate=True)
    except ValueError as exc:
        raise CheckpointError("the signature is not base64") from exc
    if len(raw) != 4 + 64 or not name:
        raise CheckpointError("the signature line must carry a key name, key id and signature")
    return SignedCheckpoint(Checkpoint(lines[0], size, root, timestamp), name, raw[:4], raw[4:])
