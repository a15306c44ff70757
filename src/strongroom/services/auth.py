"""Who is calling: the principal, and keys configured by the operator.

Rules:
1. Keys are held only as HMAC-SHA256 hashes under the install's pepper; the
   clear key is never kept after the hash is computed.
2. Configured keys are compared against every configured hash in constant
   time, without stopping at the first match, so timing reveals neither which
   key matched nor how many there are.
3. A revoked key is refused even when it is also listed as active.
4. The reason for a refusal goes to metrics and logs, never to the caller.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from strongroom.crypto.keyed_hash import equal, keyed_hash
from strongroom.domain.access import ROLE_SCOPES, Role, Scope
from strongroom.domain.api_keys import parse
from strongroom.domain.tenancy import DEFAULT_TENANT_ID
from strongroom.errors import AuthenticationFailed

MAX_PRESENTED_KEY_LENGTH: Final = 512
CONFIGURED_KEY_ROLE: Final = Role.OPERATOR


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a key id safe to log, its tenant, role, scopes and limit overrides."""

    key_id: str
    tenant: str
    role: Role
    scopes: frozenset[Scope]
    rate_limit: tuple[float, int] | None = None

    @property
    def platform(self) -> bool:
        return Scope.TENANTS_ADMIN in self.scopes


def bearer_token(authorization: str | None) -> str:
    """The key in an ``Authorization: Bearer`` header.

    Raises:
        AuthenticationFailed: ``missing`` or ``malformed``.
    """
    if not authorization:
        raise AuthenticationFailed("missing")
    scheme, _, presented = authorization.partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented or len(presented) > MAX_PRESENTED_KEY_LENGTH:
        raise AuthenticationFailed("malformed")
    return presented


def presented_key_id(authorization: str | None) -> str | None:
    """The public id of a well-formed managed key in a header, for audit records; else None."""
    if not authorization:
        return None
    parsed = parse(authorization.partition(" ")[2].strip())
    return parsed.key_id if parsed else None


def configured_key_id(hashed: bytes) -> str:
    """A short, non-reversible handle for a configured key: safe in logs and audit records."""
    return "cfg_" + hashed[:6].hex()


class ConfiguredKeys:
    """Operator-configured keys (``STRONGROOM_API_KEYS``), checked in constant time.

    They belong to the default tenant with the operator role, as PayFlux keys did.
    """

    def __init__(self, pepper: bytes, active: Iterable[bytes], revoked: Iterable[bytes]) -> None:
        self._pepper = pepper
        self._active = tuple(active)
        self._revoked = tuple(revoked)

    def __len__(self) -> int:
        return len(self._active)

    def match(self, presented: str) -> Principal | None:
        """The principal for a configured key, or None if it is not one.

        Raises:
            AuthenticationFailed: ``revoked``.
        """
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
            return None
        return Principal(
            configured_key_id(hashed),
            DEFAULT_TENANT_ID,
            CONFIGURED_KEY_ROLE,
            ROLE_SCOPES[CONFIGURED_KEY_ROLE],
        )
