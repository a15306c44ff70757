"""Effective configuration, read from ``STRONGROOM_*`` environment variables.

An optional env file named by ``STRONGROOM_ENV_FILE`` is read too (environment
variables win). The server re-reads both on SIGHUP, which is how API keys are
rotated without a restart.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from strongroom.crypto.keyring import parse_master_key
from strongroom.errors import ConfigurationError

ENV_PREFIX = "STRONGROOM_"
ENV_FILE_VARIABLE = "STRONGROOM_ENV_FILE"
MIN_API_KEY_LENGTH = 16

_SECRET_LISTS = frozenset({"api_keys", "revoked_keys"})
_URLS = frozenset({"database_url", "redis_url", "stream_url"})

KeyList = Annotated[tuple[SecretStr, ...], NoDecode]


class Settings(BaseSettings):
    """Every setting, with its safe default. Field names map to ``STRONGROOM_<NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="ignore",
        frozen=True,
        validate_default=True,
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    #: Addresses (or CIDR networks) of the TLS proxies whose X-Forwarded-For is
    #: believed; empty, the connecting address is the client's.
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = ()
    data_dir: Path = Path(".strongroom")

    database_url: str | None = None
    database_pool_size: int = Field(default=10, ge=1, le=500)
    #: Where the event stream lives: unset keeps it in the database (SQLite or
    #: PostgreSQL); ``redis://HOST:PORT/DB`` is Redis Streams, ``kafka://HOST:PORT``
    #: a Kafka-protocol broker. The audit log and every repository stay in the database.
    stream_url: str | None = None
    #: Prepended to every name the gateway creates on the broker (Redis keys,
    #: Kafka topics), so several deployments can share one.
    stream_prefix: str = Field(default="strongroom.", max_length=100, pattern=r"^[A-Za-z0-9._-]*$")
    #: With ``kafkas://``: the CA that signed the brokers' certificates (else the
    #: system's CAs), and a client certificate and key for mutual TLS.
    kafka_ca_file: Path | None = None
    kafka_cert_file: Path | None = None
    kafka_key_file: Path | None = None

    master_key: SecretStr | None = None
    kms_url: str | None = None
    vault_token: SecretStr | None = None
    vault_ca_file: Path | None = None
    kms_timeout_seconds: float = Field(default=2.0, gt=0, le=60)
    data_key_cache_seconds: float = Field(default=300.0, ge=0, le=86_400)
    data_key_cache_size: int = Field(default=10_000, ge=1)
    data_key_recheck_seconds: float = Field(default=5.0, gt=0, le=300)
    data_key_max_seals: int = Field(default=2**30, ge=1000, le=2**31)
    detokenize_rps: float = Field(default=5.0, gt=0)
    detokenize_burst: int = Field(default=20, ge=1)

    api_keys: KeyList = ()
    revoked_keys: KeyList = ()

    ratelimit_rps: float = Field(default=100.0, gt=0)
    ratelimit_burst: int = Field(default=500, ge=1)
    ip_ratelimit_rps: float = Field(default=5.0, gt=0)
    ip_ratelimit_burst: int = Field(default=20, ge=1)
    tenant_ratelimit_rps: float = Field(default=1000.0, gt=0)
    tenant_ratelimit_burst: int = Field(default=5000, ge=1)
    key_cache_seconds: float = Field(default=5.0, ge=0, le=300)
    usage_flush_seconds: float = Field(default=10.0, gt=0, le=3600)

    max_request_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_event_bytes: int = Field(default=64 * 1024, ge=256)
    writer_queue_max_events: int = Field(default=50_000, ge=100)
    #: Under load, how long the embedded store's writer waits for more writes to
    #: share a commit (0: never wait). See docs/operations.md.
    commit_delay_ms: float = Field(default=1.0, ge=0, le=50)

    consumer_visibility_timeout_seconds: float = Field(default=30.0, gt=0)
    consumer_max_deliveries: int = Field(default=5, ge=1, le=1000)

    audit_checkpoint_seconds: float = Field(default=60.0, gt=0, le=86_400)
    audit_checkpoint_records: int = Field(default=1000, ge=1)
    audit_retention_days: int = Field(default=400, ge=365)

    #: Redis shared by every gateway for risk velocity counters and seen cards;
    #: unset keeps them in process (the pilot).
    redis_url: str | None = None
    redis_velocity_prefix: str = Field(default="strongroom:velocity:", min_length=1, max_length=200)
    redis_seen_prefix: str = Field(default="strongroom:seen:", min_length=1, max_length=200)
    #: Rate limits are shared through the same Redis, under this prefix.
    redis_ratelimit_prefix: str = Field(
        default="strongroom:ratelimit:", min_length=1, max_length=200
    )
    risk_history_seconds: int = Field(default=86_400, ge=0, le=31 * 86_400)
    risk_policy_cache_seconds: float = Field(default=1.0, ge=0, le=300)
    #: Stored decisions older than this are pruned in the background. The floor of
    #: 30 days keeps a typo from deleting the decisions disputes still need.
    risk_decision_retention_days: int = Field(default=400, ge=30, le=3650)
    velocity_max_keys: int = Field(default=100_000, ge=1)
    velocity_max_events: int = Field(default=1_000_000, ge=1)
    velocity_max_events_per_key: int = Field(default=10_000, ge=1)
    processor_health_window_seconds: int = Field(default=300, ge=1, le=86_400)
    processor_health_baseline_seconds: int = Field(default=3600, ge=0, le=7 * 86_400)
    processor_health_bucket_seconds: int = Field(default=30, ge=1, le=3600)
    processor_health_min_events: int = Field(default=20, ge=1)
    processor_health_max_series: int = Field(default=5_000, ge=1)
    processor_health_publish_seconds: float = Field(default=5.0, gt=0, le=3600)

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: bool = True
    shutdown_timeout_seconds: float = Field(default=8.0, gt=0, le=60)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError as exc:
                raise ValueError(f"{entry!r} is not an IP address or network") from exc
        return value

    @field_validator("api_keys", "revoked_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        # Operators write keys comma-separated, as PayFlux did; blanks are ignored.
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("api_keys", "revoked_keys")
    @classmethod
    def _keys_are_long_enough(cls, value: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        for index, key in enumerate(value):
            if len(key.get_secret_value()) < MIN_API_KEY_LENGTH:
                raise ValueError(
                    f"key #{index + 1} is shorter than {MIN_API_KEY_LENGTH} characters"
                )
        return value

    @field_validator("master_key")
    @classmethod
    def _master_key_is_32_bytes(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_master_key(value.get_secret_value())
        return value

    @field_validator("kms_url")
    @classmethod
    def _kms_url_names_a_backend(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("local:", "vault://", "vault+https://")):
            raise ValueError("use local: or vault://HOST:PORT/MOUNT/keys/NAME")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url_is_redis(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("use redis://HOST:PORT/DB, rediss:// or unix://")
        return value

    @field_validator("stream_url")
    @classmethod
    def _stream_url_names_an_engine(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(
            ("redis://", "rediss://", "kafka://", "kafkas://")
        ):
            raise ValueError(
                "use redis://HOST:PORT/DB or kafka://HOST:PORT[,HOST:PORT] (kafkas:// for TLS)"
            )
        return value

    @property
    def database_path(self) -> Path:
        return self.data_dir / "strongroom.db"

    @property
    def pepper_path(self) -> Path:
        """The install's pepper (its name is fixed in ``crypto.keyed_hash``)."""
        return self.data_dir / "pepper"

    def redacted(self) -> dict[str, Any]:
        """The effective configuration with every secret replaced by a count or a mask."""
        shown: dict[str, Any] = {}
        for name, value in self.model_dump().items():
            if name in _SECRET_LISTS:
                shown[name] = f"<{len(value)} redacted>"
            elif name in _URLS and value:
                shown[name] = _redact_url_password(value)
            elif isinstance(value, SecretStr):
                shown[name] = "<redacted>"
            elif isinstance(value, Path):
                shown[name] = str(value)
            else:
                shown[name] = value
        return shown


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment (and env file), applying explicit overrides.

    Raises:
        ConfigurationError: one sentence naming the variable and what is wrong.
    """
    env_file = os.environ.get(ENV_FILE_VARIABLE)
    if env_file and not Path(env_file).is_file():
        raise ConfigurationError(f"{ENV_FILE_VARIABLE}: no such file: {env_file}")
    clean = {key: value for key, value in overrides.items() if value is not None}
    try:
        return Settings(_env_file=env_file or None, **clean)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        field = str(first["loc"][0]) if first["loc"] else "configuration"
        raise ConfigurationError(f"{ENV_PREFIX}{field.upper()}: {first['msg']}") from None


def _redact_url_password(url: str) -> str:
    """``postgresql://user:secret@host/db`` → ``postgresql://user:***@host/db``."""
    scheme, separator, rest = url.partition("://")
    credentials, at, location = rest.rpartition("@")
    if not separator or not at or ":" not in credentials:
        return url
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{location}"
