"""The bootstrap key: a first credential for an install that configured none.

``serve`` creates it once, prints it once, and keeps only its keyed hash in
the data dir; later starts reuse the hash and print nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from strongroom.crypto.keyed_hash import create_private_file, keyed_hash, random_token

BOOTSTRAP_HASH_FILE: Final = "bootstrap-key.hmac"
BOOTSTRAP_PREFIX: Final = "srb_"


def read_bootstrap_hash(data_dir: Path) -> bytes | None:
    path = data_dir / BOOTSTRAP_HASH_FILE
    if not path.exists():
        return None
    return bytes.fromhex(path.read_text().strip())


def create_bootstrap_key(data_dir: Path, pepper: bytes) -> str | None:
    """A new bootstrap key, or None when one was created before (its hash exists)."""
    key = BOOTSTRAP_PREFIX + random_token(32)
    created = create_private_file(
        data_dir / BOOTSTRAP_HASH_FILE, keyed_hash(pepper, key).hex().encode()
    )
    return key if created else None
