"""API-key authentication for keys configured by the operator.

Rules:
1. Keys are held only as HMAC-SHA256 hashes under the install's pepper; the
   clear key is never kept after the hash is computed.
2. Verification compares against every configured hash in constant time and
   does not stop at the first match, so timing does not reveal which key or
   how many keys there are.
3. A revoked key is refused even when it is also listed as active.
4. The reason for a refusal goes to metrics and logs, never to the caller.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from strongroom.crypto.keyed_hash import equal, keyed_hash
from strongroom.errors import AuthenticationFailed

DEFAULT_TENANT: Final = "default"
MAX_PRESENTED_KEY_LENGTH: Final = 512


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a key id safe to log, its tenant and its scopes."""

    key_id: str
    tenant: str
    scopes: frozenset[str]


ALL_TENANT_SCOPES: Final = frozenset({"events:write", "events:read", "streams:read"})


def key_id_for(hashed: bytes) -> str:
    """A short, non-reversible handle for a key: safe in logs and audit records."""
    return "key_" + hashed[:6].hex()


class ConfiguredKeys:
    """The set of operator-configured keys, checked in constant time."""

    def __init__(self, pepper: bytes, active: Iterable[bytes], revoked: Iterable[bytes]) -> None:
        self._pepper = pepper
        self._active = tuple(active)
        self._revoked = tuple(revoked)

    def __len__(self) -> int:
        return len(self._active)

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal for an ``Authorization`` header value.

        Raises:
            AuthenticationFailed: reason ``missing``, ``malformed``, ``unknown`` or ``revoked``.
        """
        if not authorization:
            raise AuthenticationFailed("missing")
        scheme, _, presented = authorization.partition(" ")
        presented = presented.strip()
        if scheme.lower() != "bearer" or not presented or len(presented) > MAX_PRESENTED_KEY_LENGTH:
            raise AuthenticationFailed("malformed")
        hashed = keyed_hash(self._pepper, presented)
        matched = False
        for candidate in self._active:
            matched |= equal(candidate, hashed)
        revoked = False
        for candidate in self._revoked:
            revoked |= equal(candidate, hashed)
        if revoked:
            raise AuthenticationFailed("revoked")
        if not matched:
            raise AuthenticationFailed("unknown")
        return Principal(key_id_for(hashed), DEFAULT_TENANT, ALL_TENANT_SCOPES)
