"""KEK rotation, rewrapping and re-encryption: the operator's key-management runbook.

Rules:

1. ``rotate`` adds a KEK version; every data key created from then on is
   wrapped under it. Existing wrapped data keys keep working.
2. ``rewrap`` re-wraps every data key under the latest KEK version, one row at
   a time with a compare-and-set, so it is idempotent, resumable after a crash
   (it simply finds the rows still behind) and safe while gateways serve.
3. ``reencrypt`` gives each tenant a fresh data key and re-seals the vault's
   rows (card numbers, tenant secrets) under it, row by row with
   compare-and-set. Retired data keys stay (rewrapped) for the stream records
   sealed under them, until the tenant is erased.
4. Every operation is audited.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from strongroom.crypto.envelope import SealContext
from strongroom.ports import DataKeyRepository, KekStatus, TenantSecretRepository, TokenRepository
from strongroom.services.audit import AuditTrail
from strongroom.services.data_keys import DataKeyService
from strongroom.services.tokens import VAULT_TABLE
from strongroom.services.transaction_signing import secret_context

BATCH: Final = 200
#: ``progress(done, total)`` after each unit of work.
Progress = Callable[[int, int], None]


def _no_progress(done: int, total: int) -> None:
    return None


@dataclass(frozen=True, slots=True)
class KeyStatus:
    kek: KekStatus
    data_keys_by_version: dict[int, int]

    @property
    def behind(self) -> int:
        """Data keys wrapped under a KEK version older than the latest."""
        return sum(
            count
            for version, count in self.data_keys_by_version.items()
            if version < self.kek.latest_version
        )

    def view(self) -> dict[str, object]:
        return {
            "backend": self.kek.backend,
            "latest_version": self.kek.latest_version,
            "min_decryption_version": self.kek.min_decryption_version,
            "versions": list(self.kek.versions),
            "data_keys_by_version": {
                str(version): count for version, count in sorted(self.data_keys_by_version.items())
            },
            "data_keys_behind": self.behind,
        }


class KeyRotation:
    def __init__(
        self,
        repository: DataKeyRepository,
        data_keys: DataKeyService,
        tokens: TokenRepository,
        secrets: TenantSecretRepository,
        audit: AuditTrail,
    ) -> None:
        self._repository = repository
        self._data_keys = data_keys
        self._key_manager = data_keys.key_manager
        self._tokens = tokens
        self._secrets = secrets
        self._audit = audit

    async def status(self) -> KeyStatus:
        return KeyStatus(
            await self._key_manager.status(), await self._repository.count_by_version()
        )

    async def rotate(self, *, actor: str) -> int:
        version = await self._key_manager.rotate()
        await self._audit.record("kms.rotated", actor=actor, details={"kek_version": version})
        return version

    async def set_min_decryption_version(self, version: int, *, actor: str) -> None:
        await self._key_manager.set_min_decryption_version(version)
        await self._audit.record(
            "kms.min_decryption_version_set", actor=actor, details={"version": version}
        )

    async def rewrap(self, *, actor: str, progress: Progress = _no_progress) -> int:
        """Re-wrap every data key behind the latest KEK version; returns how many moved."""
        status = await self.status()
        latest, total = status.kek.latest_version, status.behind
        moved, after = 0, None
        while True:
            batch = await self._repository.behind(latest, after=after, limit=BATCH)
            if not batch:
                break
            for record in batch:
                fresh = await self._key_manager.rewrap(record.wrapped)
                if await self._repository.rewrapped(record.dek_id, record.wrapped, fresh):
                    moved += 1
                progress(moved, total)
            after = batch[-1].dek_id
        await self._audit.record(
            "kms.rewrapped", actor=actor, details={"data_keys": moved, "kek_version": latest}
        )
        return moved

    async def reencrypt(self, *, actor: str, progress: Progress = _no_progress) -> int:
        """Fresh data keys for every tenant and the vault re-sealed under them;
        returns how many values were re-sealed."""
        tenants = await self._repository.tenants()
        resealed = 0
        for done, tenant in enumerate(tenants, start=1):
            retired = await self._repository.of_tenant(tenant)
            await self._data_keys.rotate_tenant(tenant)
            for record in retired:
                resealed += await self._reseal_tokens(tenant, record.dek_id)
                resealed += await self._reseal_secrets(tenant, record.dek_id)
            progress(done, len(tenants))
        await self._audit.record(
            "kms.reencrypted", actor=actor, details={"tenants": len(tenants), "values": resealed}
        )
        return resealed

    async def _reseal_tokens(self, tenant: str, dek_id: str) -> int:
        resealed, after = 0, None
        while True:
            batch = await self._tokens.sealed_with(dek_id, after=after, limit=BATCH)
            if not batch:
                return resealed
            for card in batch:
                context = SealContext(tenant, VAULT_TABLE, "number", card.token)
                number = await self._data_keys.open(card.sealed_number, context)
                fresh = await self._data_keys.seal(number, context)
                if await self._tokens.reseal(tenant, card.token, card.sealed_number, fresh):
                    resealed += 1
            after = batch[-1].token

    async def _reseal_secrets(self, tenant: str, dek_id: str) -> int:
        resealed = 0
        for secret in await self._secrets.sealed_with(dek_id):
            context = secret_context(tenant, secret.name)
            value = await self._data_keys.open(secret.sealed, context)
            fresh = await self._data_keys.seal(value, context)
            if await self._secrets.reseal(tenant, secret.name, secret.sealed, fresh):
                resealed += 1
        return resealed
