"""Opens the event log on the broker that ``STRONGROOM_STREAM_URL`` names.

``redis://`` (and ``rediss://``) is Redis Streams (the ``redis`` extra);
``kafka://HOST:PORT[,HOST:PORT]`` is a Kafka-protocol broker through
librdkafka (the ``kafka`` extra). Both keep the ``EventLog`` guarantees the
embedded log gives; how each one does is told in its adapter.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from strongroom.config import Settings
from strongroom.ports import Clock, EventLog


async def open_broker_log(settings: Settings, engine: AsyncEngine, clock: Clock | None) -> EventLog:
    """The broker's event log, connected and checked.

    Raises:
        StorageUnavailable: the broker cannot be reached.
        ConfigurationError: the URL is malformed or the client library is missing.
    """
    url = settings.stream_url
    if url is None:
        raise ValueError("open_broker_log needs STRONGROOM_STREAM_URL")
    if url.startswith(("redis://", "rediss://")):
        from strongroom.adapters.redis_streams import open_redis_event_log

        return await open_redis_event_log(settings, clock)
    from strongroom.adapters.kafka import open_kafka_event_log

    return await open_kafka_event_log(settings, engine, clock)
