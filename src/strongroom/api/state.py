"""What a running gateway holds: settings, store, services and telemetry."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Final

from strongroom.adapters.kms import open_key_manager
from strongroom.adapters.ratelimit import MemoryRateLimiter
from strongroom.adapters.store import Store, open_store
from strongroom.config import Settings, load_settings
from strongroom.crypto.keyed_hash import keyed_hash, load_or_create_pepper
from strongroom.crypto.signing import Signer
from strongroom.errors import ConfigurationError
from strongroom.observability.metrics import Metrics
from strongroom.ports import Clock, EventLog, RateLimiter, SystemClock
from strongroom.services.audit import AuditTrail
from strongroom.services.auth import ConfiguredKeys
from strongroom.services.card_events import CardEvents
from strongroom.services.data_keys import DataKeyService
from strongroom.services.ingest import IngestService
from strongroom.services.key_rotation import KeyRotation
from strongroom.services.keys import KeyService
from strongroom.services.shredding import CryptoShredder
from strongroom.services.tenant_settings import TenantSettingsService
from strongroom.services.tenants import TenantService
from strongroom.services.tokens import TokenVault
from strongroom.services.transaction_signing import TransactionSigning
from strongroom.services.usage import UsageRecorder

AUDIT_KEY_FILE: Final = "audit-signing.key"
# Tasks started from signal handlers, kept referenced until they finish.
_background: set[asyncio.Task[Any]] = set()


@dataclass(slots=True)
class GatewayState:
    settings: Settings
    store: Store
    limiter: RateLimiter
    keys: KeyService
    tenants: TenantService
    usage: UsageRecorder
    audit: AuditTrail
    ingest: IngestService
    data_keys: DataKeyService
    key_rotation: KeyRotation
    vault: TokenVault
    signing: TransactionSigning
    tenant_settings: TenantSettingsService
    pepper: bytes
    clock: Clock
    metrics: Metrics
    logger: Any
    #: Set when shutdown begins: /ready answers 503 while in-flight requests finish.
    draining: bool = False

    @property
    def log(self) -> EventLog:
        return self.store.log

    async def aclose(self) -> None:
        try:
            await self.data_keys.key_manager.aclose()
        finally:
            await self.store.aclose()

    def reload_keys(self) -> None:
        """Re-read the configuration and swap the configured keys; keep them on error."""
        try:
            fresh = load_settings(data_dir=self.settings.data_dir)
        except ConfigurationError as exc:
            self.logger.error("keys_reload_failed", error=str(exc))
            return
        self.keys.configured = configured_keys(fresh, self.pepper)
        details = {
            "active_keys": len(self.keys.configured),
            "revoked_keys": len(fresh.revoked_keys),
        }
        self.logger.info("keys_reloaded", **details)
        task = asyncio.get_running_loop().create_task(
            self.audit.record("config.reloaded", actor="system:sighup", details=details)
        )
        _background.add(task)
        task.add_done_callback(_background.discard)


def configured_keys(settings: Settings, pepper: bytes) -> ConfiguredKeys:
    revoked = [keyed_hash(pepper, key.get_secret_value()) for key in settings.revoked_keys]
    active = [keyed_hash(pepper, key.get_secret_value()) for key in settings.api_keys]
    return ConfiguredKeys(pepper, active, revoked)


async def open_gateway(
    settings: Settings, metrics: Metrics, logger: Any, *, migrate: bool = False
) -> GatewayState:
    """Open the store and wire every service; the caller closes ``state.store``."""
    pepper = load_or_create_pepper(settings.data_dir)
    signer = Signer.load_or_create(settings.data_dir / AUDIT_KEY_FILE)
    store = await open_store(settings, migrate=migrate)
    try:
        key_manager = await open_key_manager(settings)
    except BaseException:
        await store.aclose()
        raise
    clock = SystemClock()
    audit = AuditTrail(store.audit, signer, clock)
    usage = UsageRecorder(store.usage, clock)
    data_keys = DataKeyService(
        store.data_keys,
        key_manager,
        clock,
        cache_seconds=settings.data_key_cache_seconds,
        cache_size=settings.data_key_cache_size,
        max_seals=settings.data_key_max_seals,
        recheck_seconds=settings.data_key_recheck_seconds,
    )
    tenant_settings = TenantSettingsService(store.tenant_settings, clock, audit)
    vault = TokenVault(store.tokens, data_keys, tenant_settings, pepper, clock, audit)
    signing = TransactionSigning(store.secrets, data_keys, tenant_settings, clock, audit)
    shredder = CryptoShredder(
        data_keys, store.tokens, store.secrets, tenant_settings, signing, vault
    )
    tenants = TenantService(store.tenants, store.keys, usage, store.log, clock, audit, shredder)
    keys = KeyService(
        store.keys,
        store.tenants,
        pepper,
        clock,
        audit=audit,
        configured=configured_keys(settings, pepper),
        cache_seconds=settings.key_cache_seconds,
    )
    return GatewayState(
        settings=settings,
        store=store,
        limiter=MemoryRateLimiter(),
        keys=keys,
        tenants=tenants,
        usage=usage,
        audit=audit,
        ingest=IngestService(
            store.log,
            CardEvents(vault, signing, data_keys),
            tenant_settings,
            max_event_bytes=settings.max_event_bytes,
        ),
        data_keys=data_keys,
        key_rotation=KeyRotation(store.data_keys, data_keys, store.tokens, store.secrets, audit),
        vault=vault,
        signing=signing,
        tenant_settings=tenant_settings,
        pepper=pepper,
        clock=clock,
        metrics=metrics,
        logger=logger,
    )
