"""What a running gateway holds: settings, adapters, services and telemetry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from strongroom.config import Settings, load_settings
from strongroom.crypto.keyed_hash import keyed_hash, load_or_create_pepper
from strongroom.errors import ConfigurationError
from strongroom.observability.metrics import Metrics
from strongroom.ports import EventLog, RateLimiter
from strongroom.services.auth import ConfiguredKeys
from strongroom.services.bootstrap import read_bootstrap_hash
from strongroom.services.ingest import IngestService


@dataclass(slots=True)
class GatewayState:
    settings: Settings
    log: EventLog
    limiter: RateLimiter
    keys: ConfiguredKeys
    pepper: bytes
    ingest: IngestService
    logger: Any
    metrics: Metrics = field(default_factory=Metrics)

    def reload_keys(self) -> None:
        """Re-read the configuration and swap the key set; keep the old one on error."""
        try:
            fresh = load_settings(data_dir=self.settings.data_dir)
        except ConfigurationError as exc:
            self.logger.error("keys_reload_failed", error=str(exc))
            return
        self.keys = build_keys(fresh, self.pepper)
        self.logger.info("keys_reloaded", active=len(self.keys), revoked=len(fresh.revoked_keys))


def build_keys(settings: Settings, pepper: bytes) -> ConfiguredKeys:
    """Keys from configuration, or the bootstrap key's hash when none is configured."""
    revoked = [keyed_hash(pepper, key.get_secret_value()) for key in settings.revoked_keys]
    active = [keyed_hash(pepper, key.get_secret_value()) for key in settings.api_keys]
    if not active:
        bootstrap = read_bootstrap_hash(settings.data_dir)
        active = [bootstrap] if bootstrap else []
    return ConfiguredKeys(pepper, active, revoked)


def load_pepper(settings: Settings) -> bytes:
    return load_or_create_pepper(settings.data_dir)
