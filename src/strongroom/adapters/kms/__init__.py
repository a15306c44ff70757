"""Key managers: the local keyring (default) and Vault/OpenBao Transit."""

from __future__ import annotations

from typing import TYPE_CHECKING

from strongroom.config import Settings
from strongroom.crypto.keyring import parse_master_key
from strongroom.errors import ConfigurationError
from strongroom.ports import KeyManager

if TYPE_CHECKING:
    from strongroom.adapters.kms.vault_token import TokenLog


async def open_key_manager(settings: Settings, log: TokenLog | None = None) -> KeyManager:
    """The key manager ``STRONGROOM_KMS_URL`` names (the local keyring when unset);
    ``log`` hears about the Vault token's renewals.

    Raises:
        ConfigurationError: the URL, token or keyring is wrong.
        KeyManagerUnavailable: the KMS cannot be reached.
    """
    url = settings.kms_url or "local:"
    if url.startswith("local:"):
        from strongroom.adapters.kms.local import LocalKeyManager

        master = settings.master_key
        return LocalKeyManager(
            settings.data_dir,
            None if master is None else parse_master_key(master.get_secret_value()),
        )
    from strongroom.adapters.kms.vault import VaultTransitKeyManager

    if settings.vault_token is None:
        raise ConfigurationError(
            "STRONGROOM_VAULT_TOKEN: required when STRONGROOM_KMS_URL is vault"
        )
    return await VaultTransitKeyManager.connect(
        url,
        settings.vault_token.get_secret_value(),
        timeout=settings.kms_timeout_seconds,
        ca_file=settings.vault_ca_file,
        log=log,
    )
