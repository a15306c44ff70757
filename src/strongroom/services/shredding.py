"""Crypto-shredding: a tenant's data keys are destroyed before anything else of it.

Once the data keys are gone, every value sealed for the tenant is unreadable
wherever a copy survives (backups, exports, stream records already consumed),
so the order matters: keys first, then the rows that held sealed values.
"""

from __future__ import annotations

from strongroom.ports import TenantSecretRepository, TokenRepository
from strongroom.services.data_keys import DataKeyService
from strongroom.services.tenant_settings import TenantSettingsService
from strongroom.services.tokens import TokenVault
from strongroom.services.transaction_signing import TransactionSigning


class CryptoShredder:
    def __init__(
        self,
        data_keys: DataKeyService,
        tokens: TokenRepository,
        secrets: TenantSecretRepository,
        settings: TenantSettingsService,
        signing: TransactionSigning,
        vault: TokenVault,
    ) -> None:
        self._vault = vault
        self._data_keys = data_keys
        self._tokens = tokens
        self._secrets = secrets
        self._settings = settings
        self._signing = signing

    async def erase_tenant(self, tenant: str) -> dict[str, int]:
        """Destroy the tenant's data keys, then its tokens, secrets and settings."""
        data_keys = await self._data_keys.shred_tenant(tenant)
        self._signing.forget(tenant)
        tokens = await self._tokens.erase_tenant(tenant)
        self._vault.forget_tenant(tenant)
        secrets = await self._secrets.erase_tenant(tenant)
        await self._settings.erase_tenant(tenant)
        return {
            "data_keys_destroyed": data_keys,
            "tokens_erased": tokens,
            "secrets_erased": secrets,
        }
