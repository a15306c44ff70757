"""Tenants: create, suspend, resume, export and erase.

Rules:
1. Tenant names are unique; ids are public handles and never reused.
2. Suspending a tenant makes its keys answer 403 at once in this process.
3. Erasing deletes the tenant's records, keys and usage, its risk policies
   and its risk decisions; the tenant row stays as a tombstone with its name
   cleared.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any, Final

from strongroom.domain import topics
from strongroom.domain.tenancy import (
    DEFAULT_TENANT_ID,
    ApiKeyRecord,
    Tenant,
    TenantStatus,
    check_tenant_name,
    new_tenant_id,
)
from strongroom.errors import Conflict, InvalidRequest, NotFound
from strongroom.ports import (
    ApiKeyRepository,
    Clock,
    EventLog,
    TenantRepository,
)
from strongroom.services.audit import AuditTrail, cli_actor
from strongroom.services.risk_stores import DecisionJournal, ErasablePolicyStore
from strongroom.services.shredding import CryptoShredder
from strongroom.services.usage import UsageRecorder

EXPORT_PAGE: Final = 500


class TenantService:
    def __init__(
        self,
        tenants: TenantRepository,
        keys: ApiKeyRepository,
        usage: UsageRecorder,
        log: EventLog,
        clock: Clock,
        audit: AuditTrail,
        shredder: CryptoShredder | None = None,
        *,
        risk_policies: ErasablePolicyStore | None = None,
        risk_decisions: DecisionJournal | None = None,
    ) -> None:
        self._shredder = shredder
        self._risk_policies = risk_policies
        self._risk_decisions = risk_decisions
        self._audit = audit
        self._tenants = tenants
        self._keys = keys
        self._usage = usage
        self._log = log
        self._clock = clock

    async def create(
        self, name: str, *, tenant_id: str | None = None, actor: str | None = None
    ) -> Tenant:
        """Raises InvalidRequest for a bad name and Conflict when the name is taken."""
        try:
            check_tenant_name(name)
        except ValueError as exc:
            raise InvalidRequest(f"Invalid tenant name: {exc}.") from None
        now = self._clock.now()
        tenant = Tenant(tenant_id or new_tenant_id(), name, TenantStatus.ACTIVE, now, now)
        await self._tenants.create(tenant)
        await self._audit.record(
            "tenant.created", actor=actor or cli_actor(), tenant=tenant.id, resource=tenant.id
        )
        return tenant

    async def ensure_default(self) -> Tenant:
        """The tenant that operator-configured keys belong to, created on first use."""
        existing = await self._tenants.get(DEFAULT_TENANT_ID)
        if existing is not None:
            return existing
        try:
            return await self.create(DEFAULT_TENANT_ID, tenant_id=DEFAULT_TENANT_ID, actor="system")
        except Conflict:
            # Another gateway created it at the same moment.
            found = await self._tenants.get(DEFAULT_TENANT_ID)
            assert found is not None
            return found

    async def find(self, id_or_name: str) -> Tenant | None:
        return await self._tenants.find(id_or_name)

    async def get(self, id_or_name: str) -> Tenant:
        tenant = await self._tenants.find(id_or_name)
        if tenant is None:
            raise NotFound("There is no such tenant.")
        return tenant

    async def list(self, *, after: str | None, limit: int) -> list[Tenant]:
        return await self._tenants.list(after=after, limit=limit)

    async def set_status(
        self, id_or_name: str, status: TenantStatus, *, actor: str | None = None
    ) -> Tenant:
        tenant = await self.get(id_or_name)
        if tenant.status is TenantStatus.ERASED:
            raise NotFound("There is no such tenant.")
        updated = await self._tenants.set_status(tenant.id, status, self._clock.now())
        assert updated is not None
        action = "tenant.suspended" if status is TenantStatus.SUSPENDED else "tenant.resumed"
        await self._audit.record(
            action, actor=actor or cli_actor(), tenant=tenant.id, resource=tenant.id
        )
        return updated

    async def export(self, id_or_name: str, *, actor: str | None = None) -> AsyncIterator[bytes]:
        """Every piece of the tenant's data as JSON lines (keys without secrets)."""
        tenant = await self.get(id_or_name)
        await self._audit.record(
            "tenant.exported", actor=actor or cli_actor(), tenant=tenant.id, resource=tenant.id
        )
        return self._export_lines(tenant)

    async def _export_lines(self, tenant: Tenant) -> AsyncIterator[bytes]:
        yield _line({"type": "tenant", **asdict(tenant)})
        after: str | None = None
        while True:
            keys = await self._keys.list(tenant.id, after=after, limit=EXPORT_PAGE)
            for key in keys:
                view = key_view(key)
                yield _line({"type": "api_key", **view})
            if len(keys) < EXPORT_PAGE:
                break
            after = keys[-1].id
        for row in await self._usage.query(tenant.id, "0000-00-00", "9999-99-99"):
            yield _line({"type": "usage", **asdict(row)})
        for topic in (topics.TOKENIZED, topics.dead_letter_topic(topics.TOKENIZED)):
            offset: int | None = None
            while True:
                records = await self._log.read(
                    topic, tenant=tenant.id, after=offset, limit=EXPORT_PAGE
                )
                for record in records:
                    yield _line(
                        {
                            "type": "record",
                            "topic": topic,
                            "offset": record.offset,
                            "key": record.key,
                            "appended_at": record.appended_at,
                            "record": json.loads(record.payload),
                        }
                    )
                if len(records) < EXPORT_PAGE:
                    break
                offset = records[-1].offset

    async def erase(self, id_or_name: str, *, actor: str | None = None) -> tuple[Tenant, int]:
        """Delete the tenant's data; returns the tombstone and how many records went."""
        tenant = await self.get(id_or_name)
        if tenant.status is TenantStatus.ERASED:
            raise NotFound("There is no such tenant.")
        vault: dict[str, int] = {}
        if self._shredder is not None:
            vault = await self._shredder.erase_tenant(tenant.id)
        erased = await self._log.erase_tenant(tenant.id)
        risk: dict[str, int] = {}
        if self._risk_policies is not None:
            risk["risk_policies_erased"] = await self._risk_policies.erase_tenant(tenant.id)
        if self._risk_decisions is not None:
            risk["risk_decisions_erased"] = await self._risk_decisions.erase_tenant(tenant.id)
        await self._tenants.erase(tenant.id, self._clock.now())
        # Counts still in memory would recreate the erased usage at the next flush.
        self._usage.discard(tenant.id)
        await self._audit.record(
            "tenant.erased", actor=actor or cli_actor(), tenant=tenant.id, resource=tenant.id,
            details={"records_erased": erased, **vault, **risk},
        )  # fmt: skip
        tombstone = await self._tenants.get(tenant.id)
        assert tombstone is not None
        return tombstone, erased


def key_view(key: ApiKeyRecord) -> dict[str, Any]:
    """The public view of a key record: never its hash."""
    return {
        "id": key.id,
        "tenant": key.tenant_id,
        "name": key.name,
        "role": key.role.value,
        "scopes": sorted(scope.value for scope in key.scopes),
        "mode": key.mode,
        "created_at": key.created_at,
        "created_by": key.created_by,
        "expires_at": key.expires_at,
        "last_used_at": key.last_used_at,
        "revoked_at": key.revoked_at,
        "replaced_by": key.replaced_by,
    }


def tenant_view(tenant: Tenant) -> dict[str, Any]:
    return {
        "id": tenant.id,
        "name": tenant.name,
        "status": tenant.status.value,
        "created_at": tenant.created_at,
        "updated_at": tenant.updated_at,
    }


def _line(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), default=str).encode() + b"\n"
