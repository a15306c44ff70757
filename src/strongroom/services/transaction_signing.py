"""Per-tenant transaction-signing secrets, stored sealed, and the signature check.

A tenant creates a signing secret (shown once); its clients sign each
high-value transaction's money fields with it (``crypto.transaction_signing``).
Transactions above the tenant's ``signature_required_above`` must carry a
valid signature; a signature sent below it is checked too.
"""

from __future__ import annotations

from typing import Final

from strongroom.crypto.envelope import SealContext
from strongroom.crypto.transaction_signing import (
    MoneyFields,
    new_signing_secret,
    verify_transaction,
)
from strongroom.errors import SignatureRejected
from strongroom.ports import Clock, SealedSecret, TenantSecretRepository
from strongroom.services.audit import AuditTrail
from strongroom.services.data_keys import DataKeyService
from strongroom.services.single_flight import SingleFlight
from strongroom.services.tenant_settings import TenantSettingsService

SECRET_NAME: Final = "transaction_signing"  # noqa: S105 - a name, not a secret
SECRETS_TABLE: Final = "tenant_secrets"
_CACHE_SECONDS: Final = 5.0


def secret_context(tenant: str, name: str) -> SealContext:
    return SealContext(tenant, SECRETS_TABLE, "value", name)


class TransactionSigning:
    def __init__(
        self,
        secrets: TenantSecretRepository,
        data_keys: DataKeyService,
        settings: TenantSettingsService,
        clock: Clock,
        audit: AuditTrail,
    ) -> None:
        self._secrets = secrets
        self._data_keys = data_keys
        self._settings = settings
        self._clock = clock
        self._audit = audit
        self._cache: dict[str, tuple[float, str | None]] = {}
        self._fetching: SingleFlight[str, str | None] = SingleFlight()

    async def create_secret(self, tenant: str, *, actor: str) -> str:
        """A new signing secret for the tenant (replacing any); returned once, stored sealed."""
        secret = new_signing_secret()
        sealed = await self._data_keys.seal(secret.encode(), secret_context(tenant, SECRET_NAME))
        await self._secrets.put(SealedSecret(tenant, SECRET_NAME, sealed, self._clock.now()))
        self._cache.pop(tenant, None)
        await self._audit.record("signing_secret.created", actor=actor, tenant=tenant)
        return secret

    async def _secret(self, tenant: str) -> str | None:
        now = self._clock.now()
        cached = self._cache.get(tenant)
        if cached is not None and cached[0] > now:
            return cached[1]
        return await self._fetching.run(tenant, lambda: self._fetch_secret(tenant, now))

    async def _fetch_secret(self, tenant: str, now: float) -> str | None:
        stored = await self._secrets.get(tenant, SECRET_NAME)
        secret = None
        if stored is not None:
            opened = await self._data_keys.open(stored.sealed, secret_context(tenant, SECRET_NAME))
            secret = opened.decode()
        self._cache[tenant] = (now + _CACHE_SECONDS, secret)
        return secret

    async def check(self, tenant: str, fields: MoneyFields, signature: str | None) -> bool:
        """Whether a valid signature was present; refuses what the tenant requires.

        Raises:
            SignatureRejected: ``signature_required`` (above the tenant's
                threshold without one) or ``signature_invalid``.
        """
        if signature is None:
            threshold = (await self._settings.get(tenant)).signature_required_above
            if threshold is not None and fields.amount > threshold:
                raise SignatureRejected(
                    "signature_required",
                    f"Transactions above {threshold} (minor units) must be signed.",
                )
            return False
        secret = await self._secret(tenant)
        if secret is None or not verify_transaction(secret, fields, signature):
            raise SignatureRejected(
                "signature_invalid", "The transaction signature does not match its money fields."
            )
        return True

    def forget(self, tenant: str) -> None:
        self._cache.pop(tenant, None)
