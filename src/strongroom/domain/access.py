"""Roles and scopes: who may do what, in one table.

Rules:
1. A key's effective scopes are its role's scopes, optionally narrowed by an
   explicit scope list (like restricted keys); never widened.
2. ``tenants:admin`` (the platform scope) belongs to no role: it is granted
   explicitly, only to platform administrators.
3. A key may mint or rotate keys only with a role ranked at most its own and
   scopes within its own scopes: no escalation.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Final


class Scope(StrEnum):
    EVENTS_WRITE = "events:write"
    EVENTS_READ = "events:read"
    STREAMS_READ = "streams:read"
    TRANSACTIONS_EVALUATE = "transactions:evaluate"
    TOKENS_CREATE = "tokens:create"
    TOKENS_DETOKENIZE = "tokens:detokenize"
    LOGS_WRITE = "logs:write"
    LOGS_READ = "logs:read"
    WEBHOOKS_MANAGE = "webhooks:manage"
    KEYS_MANAGE = "keys:manage"
    SETTINGS_MANAGE = "settings:manage"
    AUDIT_READ = "audit:read"
    USAGE_READ = "usage:read"
    TENANTS_ADMIN = "tenants:admin"


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"


PLATFORM_SCOPE: Final = Scope.TENANTS_ADMIN

ROLE_SCOPES: Final[dict[Role, frozenset[Scope]]] = {
    Role.VIEWER: frozenset(
        {Scope.EVENTS_READ, Scope.STREAMS_READ, Scope.LOGS_READ, Scope.USAGE_READ}
    ),
    Role.OPERATOR: frozenset(
        {
            Scope.EVENTS_WRITE,
            Scope.EVENTS_READ,
            Scope.STREAMS_READ,
            Scope.TRANSACTIONS_EVALUATE,
            Scope.TOKENS_CREATE,
            Scope.LOGS_WRITE,
            Scope.LOGS_READ,
            Scope.USAGE_READ,
        }
    ),
    Role.ADMIN: frozenset(set(Scope) - {PLATFORM_SCOPE}),
}

ROLE_RANK: Final[dict[Role, int]] = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}


class EscalationError(ValueError):
    """Raised when a key tries to grant more than it holds; the message says what."""


def parse_scopes(names: Iterable[str]) -> frozenset[Scope]:
    """Scopes from their names.

    Raises:
        ValueError: a name is not a scope; the message lists the valid ones.
    """
    scopes = set()
    for name in names:
        try:
            scopes.add(Scope(name))
        except ValueError:
            valid = ", ".join(scope.value for scope in Scope)
            raise ValueError(f"unknown scope {name[:64]!r}; valid scopes: {valid}") from None
    return frozenset(scopes)


def effective_scopes(
    role: Role, narrowed_to: frozenset[Scope] | None, *, platform: bool = False
) -> frozenset[Scope]:
    """The scopes a key holds: its role's, narrowed if asked, plus the platform scope."""
    scopes = ROLE_SCOPES[role]
    if narrowed_to is not None:
        scopes = scopes & narrowed_to
    if platform:
        scopes = scopes | {PLATFORM_SCOPE}
    return scopes


def check_grant(
    granter_role: Role,
    granter_scopes: frozenset[Scope],
    role: Role,
    requested: frozenset[Scope] | None,
) -> frozenset[Scope]:
    """The scopes a new key gets, after checking the granter may grant them.

    ``requested`` may name scopes outside the role only if it is the platform
    scope and the granter holds it.

    Raises:
        EscalationError: the role outranks the granter's, or a scope is not the granter's.
    """
    if ROLE_RANK[role] > ROLE_RANK[granter_role]:
        raise EscalationError(f"a {granter_role} key cannot create a key with role {role}")
    platform = requested is not None and PLATFORM_SCOPE in requested
    narrowed = None if requested is None else requested - {PLATFORM_SCOPE}
    if narrowed is not None:
        outside_role = narrowed - ROLE_SCOPES[role]
        if outside_role:
            names = ", ".join(sorted(outside_role))
            raise EscalationError(f"the role {role} does not include: {names}")
    granted = effective_scopes(role, narrowed, platform=platform)
    beyond = granted - granter_scopes
    if beyond:
        names = ", ".join(sorted(beyond))
        raise EscalationError(f"this key cannot grant scopes it does not hold: {names}")
    return granted
