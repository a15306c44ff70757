"""Managed API keys: create, list, rotate, revoke, and authenticate fast.

Rules:
1. A key's secret is returned once, by ``create`` or ``rotate``; only its
   keyed hash is stored.
2. Authentication costs one HMAC and one dictionary lookup on the hot path:
   key records are cached for ``cache_seconds`` (revocations and rotations made
   through this process take effect at once; those made by another process or
   the CLI within ``cache_seconds``).
3. An unknown key id and a wrong secret take the same path: a record (real or
   a dummy) is compared in constant time, and the caller gets the same 401.
4. No escalation: a key grants only a role ranked at most its own and scopes
   it holds (``domain.access.check_grant``).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from strongroom.crypto.keyed_hash import equal, keyed_hash
from strongroom.domain import api_keys
from strongroom.domain.access import (
    PLATFORM_SCOPE,
    ROLE_SCOPES,
    EscalationError,
    Role,
    Scope,
    check_grant,
)
from strongroom.domain.tenancy import ApiKeyRecord, TenantStatus
from strongroom.errors import (
    AuthenticationFailed,
    Conflict,
    InvalidRequest,
    NotFound,
    PermissionDenied,
)
from strongroom.ports import ApiKeyRepository, Clock, TenantRepository
from strongroom.services.audit import AuditTrail, cli_actor
from strongroom.services.auth import ConfiguredKeys, Principal, bearer_token
from strongroom.services.single_flight import SingleFlight

DEFAULT_GRACE_SECONDS: Final = 24 * 3600
NEGATIVE_CACHE_SIZE: Final = 10_000
_DUMMY_HASH: Final = b"\x00" * 32


class TenantSuspended(PermissionDenied):
    code = "tenant_suspended"

    def __init__(self) -> None:
        super().__init__("This tenant is suspended; its keys cannot be used.")


@dataclass(frozen=True, slots=True)
class _Cached:
    record: ApiKeyRecord | None
    tenant_status: TenantStatus | None
    fetched_at: float


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A key as returned once to its creator: the record and the secret."""

    record: ApiKeyRecord
    secret: str


class KeyService:
    def __init__(
        self,
        keys: ApiKeyRepository,
        tenants: TenantRepository,
        pepper: bytes,
        clock: Clock,
        *,
        audit: AuditTrail,
        configured: ConfiguredKeys | None = None,
        cache_seconds: float = 5.0,
    ) -> None:
        self._audit = audit
        self._keys = keys
        self._tenants = tenants
        self._pepper = pepper
        self._clock = clock
        self.configured = configured or ConfiguredKeys(pepper, (), ())
        self._cache_seconds = cache_seconds
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._tenant_statuses: dict[str, tuple[TenantStatus | None, float]] = {}
        self._fetching_keys: SingleFlight[str, _Cached] = SingleFlight()
        self._fetching_statuses: SingleFlight[str, TenantStatus | None] = SingleFlight()
        #: Bumped by ``forget``: a fetch that started before it does not fill the cache.
        self._generation = 0
        self._last_used: dict[str, float] = {}

    # -- authentication ---------------------------------------------------------

    async def authenticate(self, authorization: str | None) -> Principal:
        """The principal for an ``Authorization`` header.

        Raises:
            AuthenticationFailed: missing, malformed, unknown, revoked or expired.
            PermissionDenied: the key's tenant is suspended (``tenant_suspended``).
        """
        presented = bearer_token(authorization)
        if not api_keys.looks_managed(presented):
            principal = self.configured.match(presented)
            if principal is None:
                raise AuthenticationFailed("unknown")
            status = await self._tenant_status(principal.tenant, self._clock.now())
            if status is TenantStatus.SUSPENDED:
                raise TenantSuspended()
            return principal
        parsed = api_keys.parse(presented)
        if parsed is None:
            # A mistyped key fails its checksum before any lookup.
            raise AuthenticationFailed("malformed")
        now = self._clock.now()
        cached = await self._lookup(parsed.key_id, now)
        record = cached.record
        hashed = keyed_hash(self._pepper, presented)
        matches = equal(record.secret_hash if record else _DUMMY_HASH, hashed)
        if record is None or not matches:
            raise AuthenticationFailed("unknown")
        refusal = record.refusal_at(now)
        if refusal is not None:
            raise AuthenticationFailed(refusal)
        if cached.tenant_status is not TenantStatus.ACTIVE:
            if cached.tenant_status is TenantStatus.SUSPENDED:
                raise TenantSuspended()
            raise AuthenticationFailed("unknown")
        self._last_used[record.id] = now
        limit = None
        if record.rate_limit_rps and record.rate_limit_burst:
            limit = (record.rate_limit_rps, record.rate_limit_burst)
        return Principal(record.id, record.tenant_id, record.role, record.scopes, limit)

    async def _lookup(self, key_id: str, now: float) -> _Cached:
        cached = self._cache.get(key_id)
        if cached is not None and now - cached.fetched_at < self._cache_seconds:
            return cached
        return await self._fetching_keys.run(key_id, lambda: self._fetch_key(key_id, now))

    async def _fetch_key(self, key_id: str, now: float) -> _Cached:
        generation = self._generation
        record = await self._keys.get(key_id)
        status = None
        if record is not None:
            tenant = await self._tenants.get(record.tenant_id)
            status = tenant.status if tenant else None
        cached = _Cached(record, status, now)
        if generation != self._generation:
            return cached
        self._cache[key_id] = cached
        self._cache.move_to_end(key_id)
        # Unknown ids are cached too, so random well-formed keys cannot make
        # every request a database query; the bound keeps memory flat.
        while len(self._cache) > NEGATIVE_CACHE_SIZE:
            self._cache.popitem(last=False)
        return cached

    async def _tenant_status(self, tenant_id: str, now: float) -> TenantStatus | None:
        """A tenant's status, cached like key records (configured keys have no record)."""
        cached = self._tenant_statuses.get(tenant_id)
        if cached is not None and now - cached[1] < self._cache_seconds:
            return cached[0]
        return await self._fetching_statuses.run(
            tenant_id, lambda: self._fetch_tenant_status(tenant_id, now)
        )

    async def _fetch_tenant_status(self, tenant_id: str, now: float) -> TenantStatus | None:
        generation = self._generation
        tenant = await self._tenants.get(tenant_id)
        status = tenant.status if tenant else None
        if generation == self._generation:
            self._tenant_statuses[tenant_id] = (status, now)
        return status

    def forget(self, key_id: str | None = None) -> None:
        """Drop cached records (one key, or all after a tenant changes state)."""
        self._generation += 1
        if key_id is None:
            self._cache.clear()
            self._tenant_statuses.clear()
        else:
            self._cache.pop(key_id, None)

    async def flush_last_used(self) -> None:
        """Write last-use times gathered since the previous flush, in one statement."""
        pending, self._last_used = self._last_used, {}
        try:
            await self._keys.touch(pending)
        except Exception:
            for key_id, used in pending.items():
                self._last_used[key_id] = max(used, self._last_used.get(key_id, 0.0))
            raise

    # -- management ---------------------------------------------------------------

    async def create(
        self,
        *,
        tenant_id: str,
        name: str,
        role: Role,
        scopes: frozenset[Scope] | None,
        expires_at: float | None,
        granted_by: Principal | None,
        mode: api_keys.Mode = "live",
        platform: bool = False,
        rate_limit: tuple[float | None, int | None] = (None, None),
    ) -> IssuedKey:
        """Create a key in ``tenant_id``. ``granted_by`` None means an operator at the CLI.

        ``scopes`` narrows the role's scopes (None keeps them all); the platform
        scope in ``scopes``, or ``platform``, adds ``tenants:admin``.

        Raises:
            PermissionDenied: the granter cannot grant this role or these scopes.
            InvalidRequest: the expiry is in the past.
            NotFound: no such tenant.
        """
        now = self._clock.now()
        tenant = await self._tenants.get(tenant_id)
        if tenant is None or tenant.status is TenantStatus.ERASED:
            raise NotFound("There is no such tenant.")
        if platform:
            scopes = (scopes if scopes is not None else ROLE_SCOPES[role]) | {PLATFORM_SCOPE}
        if granted_by is not None:
            try:
                check_grant(granted_by.role, granted_by.scopes, role, scopes)
            except EscalationError as exc:
                raise PermissionDenied(f"Not allowed: {exc}.") from None
        if expires_at is not None and expires_at <= now:
            raise InvalidRequest("expires_at must be in the future.")
        issued = self._issue(
            tenant_id=tenant_id, name=name, role=role, scopes=scopes, expires_at=expires_at,
            created_by=granted_by.key_id if granted_by else "cli", mode=mode, now=now,
            rate_limit=rate_limit,
        )  # fmt: skip
        await self._keys.create(issued.record)
        await self._audit.record(
            "key.created", actor=_actor(granted_by), tenant=tenant_id, resource=issued.record.id,
            details=_grant_details(issued.record),
        )  # fmt: skip
        return issued

    def _issue(
        self,
        *,
        tenant_id: str,
        name: str,
        role: Role,
        scopes: frozenset[Scope] | None,
        expires_at: float | None,
        created_by: str,
        mode: api_keys.Mode,
        now: float,
        rate_limit: tuple[float | None, int | None] = (None, None),
    ) -> IssuedKey:
        secret = api_keys.generate(mode)
        parsed = api_keys.parse(secret)
        assert parsed is not None
        platform = scopes is not None and PLATFORM_SCOPE in scopes
        narrowed = None if scopes is None else scopes - {PLATFORM_SCOPE}
        if narrowed == ROLE_SCOPES[role]:
            narrowed = None
        record = ApiKeyRecord(
            id=parsed.key_id, tenant_id=tenant_id, name=name, role=role,
            narrowed_to=narrowed, platform=platform, mode=mode,
            secret_hash=keyed_hash(self._pepper, secret), created_at=now,
            created_by=created_by, expires_at=expires_at,
            rate_limit_rps=rate_limit[0], rate_limit_burst=rate_limit[1],
        )  # fmt: skip
        return IssuedKey(record, secret)

    async def get(self, tenant_id: str, key_id: str) -> ApiKeyRecord:
        """A key of ``tenant_id``; another tenant's key is NotFound, like a missing one."""
        record = await self._keys.get(key_id)
        if record is None or record.tenant_id != tenant_id:
            raise NotFound("There is no such key.")
        return record

    async def list(self, tenant_id: str, *, after: str | None, limit: int) -> list[ApiKeyRecord]:
        return await self._keys.list(tenant_id, after=after, limit=limit)

    async def rotate(
        self,
        tenant_id: str,
        key_id: str,
        *,
        grace_seconds: float,
        granted_by: Principal | None,
    ) -> IssuedKey:
        """A replacement key with the same role, scopes and expiry; the old one expires after grace.

        Raises:
            NotFound: no such key in this tenant.
            PermissionDenied: the rotating key could not have created this one.
            InvalidRequest: the key is revoked or was already rotated.
        """
        old = await self.get(tenant_id, key_id)
        scopes = old.scopes if old.narrowed_to is not None or old.platform else None
        if granted_by is not None:
            try:
                check_grant(granted_by.role, granted_by.scopes, old.role, scopes)
            except EscalationError as exc:
                raise PermissionDenied(f"Not allowed: {exc}.") from None
        now = self._clock.now()
        issued = self._issue(
            tenant_id=tenant_id, name=old.name, role=old.role, scopes=scopes,
            expires_at=old.expires_at, created_by=granted_by.key_id if granted_by else "cli",
            mode=old.mode, now=now,  # type: ignore[arg-type]
            rate_limit=(old.rate_limit_rps, old.rate_limit_burst),
        )  # fmt: skip
        if not await self._keys.rotate(key_id, issued.record, now + grace_seconds):
            raise Conflict("This key is revoked or was already rotated.")
        self.forget(key_id)
        await self._audit.record(
            "key.rotated", actor=_actor(granted_by), tenant=tenant_id, resource=key_id,
            details={"replaced_by": issued.record.id, "grace_seconds": grace_seconds,
                     **_grant_details(issued.record)},
        )  # fmt: skip
        return issued

    async def revoke(
        self, tenant_id: str, key_id: str, *, revoked_by: Principal | None = None
    ) -> ApiKeyRecord:
        """Revoke at once. Raises NotFound for missing keys and other tenants' keys."""
        record = await self.get(tenant_id, key_id)
        await self._keys.revoke(key_id, self._clock.now())
        self.forget(key_id)
        await self._audit.record(
            "key.revoked", actor=_actor(revoked_by), tenant=tenant_id, resource=key_id
        )
        return record


def _actor(principal: Principal | None) -> str:
    return principal.key_id if principal else cli_actor()


def _grant_details(record: ApiKeyRecord) -> dict[str, object]:
    """What a key may do, for the audit trail: role and scopes, never the secret."""
    return {
        "role": record.role.value,
        "scopes": sorted(scope.value for scope in record.scopes),
        "expires_at": record.expires_at,
    }
