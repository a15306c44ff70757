"""Per-tenant product settings: what a tenant chose for its own cards and signatures.

Settings are read on hot paths (tokenizing shows the BIN only where enabled),
so they are cached for a few seconds; a change made by another process is seen
within that time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field

from strongroom.ports import Clock, TenantSettingsRepository
from strongroom.services.audit import AuditTrail
from strongroom.services.single_flight import SingleFlight

CACHE_SECONDS: Final = 5.0


@dataclass(frozen=True, slots=True)
class TenantSettings:
    #: Show the first six digits (BIN) beside tokens; PCI DSS allows first six + last four.
    expose_bin: bool = False
    #: Transactions above this amount (minor units) must carry a valid signature.
    signature_required_above: int | None = None


class SettingsChange(BaseModel):
    """A partial update; fields left out keep their value."""

    model_config = ConfigDict(extra="forbid", strict=True)

    expose_bin: bool | None = None
    signature_required_above: int | None = Field(default=None, ge=0, le=10**15)
    clear_signature_requirement: bool = False


class TenantSettingsService:
    def __init__(self, repository: TenantSettingsRepository, clock: Clock, audit: AuditTrail):
        self._repository = repository
        self._clock = clock
        self._audit = audit
        self._cache: dict[str, tuple[float, TenantSettings]] = {}
        self._fetching: SingleFlight[str, TenantSettings] = SingleFlight()

    async def get(self, tenant: str) -> TenantSettings:
        now = self._clock.now()
        cached = self._cache.get(tenant)
        if cached is not None and cached[0] > now:
            return cached[1]
        return await self._fetching.run(tenant, lambda: self._fetch(tenant))

    async def _fetch(self, tenant: str) -> TenantSettings:
        stored = await self._repository.get(tenant)
        known = {
            name: stored[name] for name in TenantSettings.__dataclass_fields__ if name in stored
        }
        settings = TenantSettings(**known)  # type: ignore[arg-type]
        self._cache[tenant] = (self._clock.now() + CACHE_SECONDS, settings)
        return settings

    async def update(self, tenant: str, change: SettingsChange, *, actor: str) -> TenantSettings:
        current = await self.get(tenant)
        values: dict[str, Any] = {}
        if change.expose_bin is not None:
            values["expose_bin"] = change.expose_bin
        if change.signature_required_above is not None:
            values["signature_required_above"] = change.signature_required_above
        if change.clear_signature_requirement:
            values["signature_required_above"] = None
        updated = replace(current, **values)
        await self._repository.put(tenant, asdict(updated), self._clock.now())
        self._cache[tenant] = (self._clock.now() + CACHE_SECONDS, updated)
        await self._audit.record(
            "tenant.settings_changed", actor=actor, tenant=tenant, details=asdict(updated)
        )
        return updated

    async def erase_tenant(self, tenant: str) -> None:
        await self._repository.erase_tenant(tenant)
        self._cache.pop(tenant, None)
