"""Keyed hashes for credentials: HMAC-SHA256 under a per-install pepper.

A stolen database or key file alone does not let anyone test guesses offline:
every stored credential hash is keyed with the pepper, which lives in its own
0600 file in the data dir (or in the key manager, when one is configured).
"""

from __future__ import annotations

import hmac
import os
import secrets
from hashlib import sha256
from pathlib import Path
from typing import Final

PEPPER_BYTES: Final = 32
PEPPER_FILE: Final = "pepper"


def keyed_hash(pepper: bytes, secret: str) -> bytes:
    """HMAC-SHA256 of ``secret`` under ``pepper``."""
    return hmac.new(pepper, secret.encode(), sha256).digest()


def equal(left: bytes, right: bytes) -> bool:
    """Constant-time equality for secrets and their hashes."""
    return hmac.compare_digest(left, right)


def random_token(n_bytes: int = 32) -> str:
    """A URL-safe random string with ``n_bytes`` of entropy."""
    return secrets.token_urlsafe(n_bytes)


def create_private_file(path: Path, content: bytes) -> bool:
    """Create ``path`` with mode 0600 and write ``content``; False if it already exists.

    O_EXCL makes creation atomic, so two processes starting on a fresh data dir
    cannot each write their own secret and disagree about it.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    return True


def load_or_create_pepper(data_dir: Path) -> bytes:
    """The install's pepper, created on first use.

    Raises:
        ValueError: the pepper file exists but is not 32 bytes.
    """
    path = data_dir / PEPPER_FILE
    create_private_file(path, secrets.token_bytes(PEPPER_BYTES))
    pepper = path.read_bytes()
    if len(pepper) != PEPPER_BYTES:
        raise ValueError(f"the pepper file {path} must hold exactly {PEPPER_BYTES} bytes")
    return pepper
