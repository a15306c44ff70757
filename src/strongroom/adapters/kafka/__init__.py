"""The event log on a Kafka-protocol broker (the ``kafka`` extra: confluent-kafka).

``STRONGROOM_STREAM_URL=kafka://HOST:PORT[,HOST:PORT]`` (``kafkas://`` for TLS,
see ``_connection``) selects it. Records go to the broker; the idempotency
index and consumer-group state stay in the gateway's database (``kafka_*``
tables). How the log keeps the ``EventLog`` guarantees without Kafka
transactions is told in ``log``.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from strongroom.config import Settings
from strongroom.errors import ConfigurationError
from strongroom.ports import Clock, EventLog

__all__ = ["open_kafka_event_log"]


async def open_kafka_event_log(
    settings: Settings, engine: AsyncEngine, clock: Clock | None
) -> EventLog:
    """The Kafka event log named by ``settings.stream_url``, connected and checked.

    Raises:
        ConfigurationError: the URL is malformed, or confluent-kafka is not installed.
        StorageUnavailable: the brokers do not answer.
    """
    try:
        from strongroom.adapters.kafka._connection import KafkaConnection
        from strongroom.adapters.kafka.log import KafkaEventLog
    except ModuleNotFoundError as exc:
        if exc.name is None or not exc.name.startswith("confluent_kafka"):
            raise
        raise ConfigurationError(
            "STRONGROOM_STREAM_URL names Kafka, whose client is not installed; "
            "run: pip install 'strongroom[kafka]'"
        ) from exc
    return await KafkaEventLog.open(
        KafkaConnection.parse(
            settings.stream_url or "",
            ca_file=settings.kafka_ca_file,
            cert_file=settings.kafka_cert_file,
            key_file=settings.kafka_key_file,
        ),
        engine,
        prefix=settings.stream_prefix,
        max_queued_weight=settings.writer_queue_max_events,
        clock=clock,
    )
