"""What a running gateway holds: settings, store, services and telemetry."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from strongroom.adapters.kms import open_key_manager
from strongroom.adapters.ratelimit import MemoryRateLimiter, RedisRateLimiter
from strongroom.adapters.store import Store, open_store
from strongroom.config import Settings, load_settings
from strongroom.crypto.keyed_hash import keyed_hash, load_or_create_pepper
from strongroom.crypto.signing import Signer
from strongroom.domain.event_fast_path import IngestedEvent
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
from strongroom.services.processor_health import HealthConfig, ProcessorHealthMonitor
from strongroom.services.risk import RiskService
from strongroom.services.shredding import CryptoShredder
from strongroom.services.tenant_settings import TenantSettingsService
from strongroom.services.tenants import TenantService
from strongroom.services.tokens import TokenVault
from strongroom.services.transaction_signing import TransactionSigning
from strongroom.services.usage import UsageRecorder
from strongroom.services.velocity import (
    MemorySeenCards,
    MemoryVelocityCounter,
    SeenCards,
    VelocityCounter,
)

AUDIT_KEY_FILE: Final = "audit-signing.key"
#: The context of the keyed hash that risk keeps of a transaction's IP address.
RISK_IP_CONTEXT: Final = "strongroom risk ip v1:"
REDIS_TIMEOUT_SECONDS: Final = 1.0
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
    risk: RiskService
    health: ProcessorHealthMonitor
    pepper: bytes
    clock: Clock
    metrics: Metrics
    logger: Any
    #: Closed by ``aclose``: the Redis client of the velocity counters, if any.
    redis: Any = None
    #: Tenants whose events fed ``health`` (the metrics publisher walks them).
    health_tenants: set[str] = field(default_factory=set)
    #: Set when shutdown begins: /ready answers 503 while in-flight requests finish.
    draining: bool = False

    @property
    def log(self) -> EventLog:
        return self.store.log

    async def aclose(self) -> None:
        try:
            await self.data_keys.key_manager.aclose()
        finally:
            try:
                if self.redis is not None:
                    await self.redis.aclose()
            finally:
                await self.store.aclose()

    def observe_events(self, tenant: str, events: Sequence[IngestedEvent]) -> None:
        """Feed accepted events to the processor-health monitor (the ingest hook)."""
        if events:
            self.health_tenants.add(tenant)
            self.health.observe_all(tenant, events, self.clock.now())

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


def _or_never(seconds: float | None) -> float:
    return -1.0 if seconds is None else seconds


async def open_gateway(
    settings: Settings, metrics: Metrics, logger: Any, *, migrate: bool = False
) -> GatewayState:
    """Open the store and wire every service; the caller closes ``state.store``."""
    pepper = load_or_create_pepper(settings.data_dir)
    signer = Signer.load_or_create(settings.data_dir / AUDIT_KEY_FILE)
    store = await open_store(settings, migrate=migrate)
    try:
        key_manager = await open_key_manager(settings, log=logger)
    except BaseException:
        await store.aclose()
        raise
    try:
        velocity, seen_cards, redis = _velocity(settings)
    except BaseException:
        await key_manager.aclose()
        await store.aclose()
        raise
    metrics.kms_credential_expires_in.set_function(
        lambda: _or_never(key_manager.credential_expires_in())
    )
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
    tenants = TenantService(
        store.tenants, store.keys, usage, store.log, clock, audit, shredder,
        risk_policies=store.policies, risk_decisions=store.decisions,
    )  # fmt: skip
    keys = KeyService(
        store.keys,
        store.tenants,
        pepper,
        clock,
        audit=audit,
        configured=configured_keys(settings, pepper),
        cache_seconds=settings.key_cache_seconds,
    )
    health = ProcessorHealthMonitor(_health_config(settings))
    risk = RiskService(
        policies=store.policies,
        decisions=store.decisions,
        velocity=velocity,
        seen_cards=seen_cards,
        hash_ip=lambda ip: keyed_hash(pepper, RISK_IP_CONTEXT + ip).hex()[:32],
        health=health,
        log=store.log,
        audit=audit,
        history_seconds=settings.risk_history_seconds,
    )
    state = GatewayState(
        settings=settings,
        store=store,
        limiter=_rate_limiter(settings, redis, metrics, logger),
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
        risk=risk,
        health=health,
        pepper=pepper,
        clock=clock,
        metrics=metrics,
        logger=logger,
        redis=redis,
    )
    state.ingest.on_accepted = state.observe_events
    return state


def _rate_limiter(settings: Settings, redis: Any, metrics: Metrics, logger: Any) -> RateLimiter:
    """In process, or shared by every gateway through the Redis of ``STRONGROOM_REDIS_URL``.

    The shared limiter rides on the velocity counters' client (closed by
    ``aclose``) and answers in process, counted, while Redis does not answer.
    """
    if redis is None:
        return MemoryRateLimiter()
    return RedisRateLimiter(
        redis,
        prefix=settings.redis_ratelimit_prefix,
        on_fallback=metrics.ratelimit_fallback.inc,
        log=logger,
    )


def _health_config(settings: Settings) -> HealthConfig:
    try:
        return HealthConfig(
            window_seconds=settings.processor_health_window_seconds,
            baseline_seconds=settings.processor_health_baseline_seconds,
            bucket_seconds=settings.processor_health_bucket_seconds,
            min_events=settings.processor_health_min_events,
            max_series=settings.processor_health_max_series,
        )
    except ValueError as exc:
        raise ConfigurationError(f"STRONGROOM_PROCESSOR_HEALTH_*: {exc}") from None


def _velocity(settings: Settings) -> tuple[VelocityCounter, SeenCards, Any]:
    """In-process counters, or Redis ones when ``STRONGROOM_REDIS_URL`` is set.

    Raises:
        ConfigurationError: Redis is configured and its driver is not installed.
    """
    if settings.redis_url is None:
        velocity = MemoryVelocityCounter(
            max_keys=settings.velocity_max_keys,
            max_events=settings.velocity_max_events,
            max_events_per_key=settings.velocity_max_events_per_key,
        )
        return velocity, MemorySeenCards(), None
    try:
        from redis.asyncio import Redis

        from strongroom.adapters.velocity_redis import RedisSeenCards, RedisVelocityCounter
    except ImportError:
        raise ConfigurationError(
            "STRONGROOM_REDIS_URL is set but the Redis driver is not installed; "
            "run pip install 'strongroom[redis]'"
        ) from None
    # Short timeouts: an unreachable Redis fails an evaluation fast with 503.
    client = Redis.from_url(
        settings.redis_url,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
    )
    shared = RedisVelocityCounter(
        client,
        prefix=settings.redis_velocity_prefix,
        max_events_per_key=settings.velocity_max_events_per_key,
    )
    return shared, RedisSeenCards(client, prefix=settings.redis_seen_prefix), client
