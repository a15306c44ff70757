"""The event log on Redis Streams (``STRONGROOM_STREAM_URL=redis://HOST:PORT/DB``).

Needs Redis 7.0 or later and the ``redis`` extra. How records, groups and
idempotency are laid out is told in ``_keys``, how each call stays atomic in
``_scripts``, the log's rules in ``_log``; the operator's view is in
``docs/streams.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Final

from strongroom.config import Settings
from strongroom.errors import ConfigurationError
from strongroom.ports import Clock, EventLog

__all__ = ["open_redis_event_log"]

#: Seconds to connect, and to wait for any one reply: an unreachable Redis
#: fails a request fast with 503 instead of holding it.
CONNECT_TIMEOUT_SECONDS: Final = 2.0
REPLY_TIMEOUT_SECONDS: Final = 5.0
#: Connections per gateway; callers past them wait (up to the reply timeout) for one.
MAX_CONNECTIONS: Final = 32

_logger = logging.getLogger("strongroom.streams")


async def open_redis_event_log(settings: Settings, clock: Clock | None) -> EventLog:
    """The event log on the Redis that ``settings.stream_url`` names, connected and checked.

    Raises:
        StorageUnavailable: Redis cannot be reached.
        ConfigurationError: the ``redis`` extra is not installed.
    """
    try:
        from redis.asyncio import BlockingConnectionPool, Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import RedisError

        from strongroom.adapters.redis_streams._log import RedisEventLog
    except ImportError:
        raise ConfigurationError(
            "STRONGROOM_STREAM_URL names Redis but the Redis driver is not installed; "
            "run pip install 'strongroom[redis]'"
        ) from None
    if settings.stream_url is None:
        raise ValueError("open_redis_event_log needs STRONGROOM_STREAM_URL")
    pool = BlockingConnectionPool.from_url(
        settings.stream_url,
        max_connections=MAX_CONNECTIONS,
        timeout=REPLY_TIMEOUT_SECONDS,
        socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
        socket_timeout=REPLY_TIMEOUT_SECONDS,
        # One immediate retry on a broken connection (Redis closed an idle one),
        # never on a timeout: a retried script is safe (appends are idempotent)
        # but would double the wait of a request on an unresponsive Redis.
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    )
    client = Redis.from_pool(pool)
    log = RedisEventLog(
        client,
        prefix=settings.stream_prefix,
        max_in_flight=settings.writer_queue_max_events,
        clock=clock,
    )
    try:
        await log.check_writable()
    except BaseException:
        await log.aclose()
        raise
    try:
        config = await client.config_get("appendonly", "appendfsync", "maxmemory-policy")
    except (RedisError, OSError):
        # CONFIG is often disabled on managed Redis; durability is then the
        # operator's to check.
        return log
    _warn_if_not_durable(config)
    return log


def _warn_if_not_durable(config: Mapping[str | None, str | None]) -> None:
    if config.get("appendonly") != "yes" or config.get("appendfsync") != "always":
        _logger.warning(
            "Redis does not fsync every write (appendonly=%s, appendfsync=%s): events "
            "acknowledged shortly before a Redis crash can be lost. Set appendonly yes "
            "and appendfsync always.",
            config.get("appendonly"),
            config.get("appendfsync"),
        )
    policy = config.get("maxmemory-policy")
    if policy not in (None, "noeviction"):
        _logger.warning(
            "Redis may evict keys (maxmemory-policy=%s): records and idempotency marks "
            "can vanish. Set maxmemory-policy noeviction.",
            policy,
        )
