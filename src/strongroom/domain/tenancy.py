"""Tenants and their API keys, as the domain sees them (no storage concerns).

Rules:
1. A key is usable when it is not revoked, its expiry (if any) has not passed,
   and its tenant is active.
2. A rotated key keeps working until its grace period ends: rotation sets its
   expiry, it does not revoke it.
3. Tenant ids and key ids are public handles; secrets are never part of a record.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from strongroom.domain.access import Role, Scope, effective_scopes, parse_scopes
from strongroom.domain.api_keys import BASE62

TENANT_ID_PREFIX: Final = "ten_"
DEFAULT_TENANT_ID: Final = "default"
TENANT_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,127}$")


class TenantStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    ERASED = "erased"


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    name: str
    status: TenantStatus
    created_at: float
    updated_at: float


def new_tenant_id() -> str:
    return TENANT_ID_PREFIX + "".join(secrets.choice(BASE62) for _ in range(16))


def check_tenant_name(name: str) -> str:
    """Raises ValueError unless the name is 1–128 letters, digits, spaces or ``._-``."""
    if not TENANT_NAME.match(name):
        raise ValueError(
            "tenant names are 1 to 128 characters: letters, digits, space, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    id: str
    tenant_id: str
    name: str
    role: Role
    narrowed_to: frozenset[Scope] | None
    platform: bool
    mode: str
    secret_hash: bytes
    created_at: float
    created_by: str | None = None
    expires_at: float | None = None
    last_used_at: float | None = None
    revoked_at: float | None = None
    replaced_by: str | None = None
    rate_limit_rps: float | None = None
    rate_limit_burst: int | None = None

    @property
    def scopes(self) -> frozenset[Scope]:
        return effective_scopes(self.role, self.narrowed_to, platform=self.platform)

    def refusal_at(self, now: float) -> str | None:
        """Why the key cannot be used at ``now`` (``revoked``, ``expired``), or None."""
        if self.revoked_at is not None and self.revoked_at <= now:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return None


def encode_scopes(scopes: frozenset[Scope] | None) -> str | None:
    return None if scopes is None else json.dumps(sorted(scopes))


def decode_scopes(text: str | None) -> frozenset[Scope] | None:
    return None if text is None else parse_scopes(json.loads(text))
