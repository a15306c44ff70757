"""Opens the event log on the broker that ``STRONGROOM_STREAM_URL`` names.

``redis://`` (and ``rediss://``) is Redis Streams (the ``redis`` extra);
``kafka://HOST:PORT[,HOST:PORT]`` (``kafkas://`` for TLS) is a Kafka-protocol broker through
librdkafka (the ``kafka`` extra). Both keep the ``EventLog`` guarantees the
embedded log gives; how each one does is told in its adapter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from sqlalchemy.ext.asyncio import AsyncEngine

from strongroom.config import Settings
from strongroom.domain.topics import AUDIT, dead_letter_topic
from strongroom.ports import (
    AppendResult,
    Clock,
    DeadLetter,
    Delivery,
    EventLog,
    GroupState,
    NewRecord,
    StoredRecord,
)

#: Topics that stay in the database's log when the stream is on a broker.
DATABASE_TOPICS: Final = frozenset({AUDIT, dead_letter_topic(AUDIT)})


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


class TopicRoutedLog(EventLog):
    """The broker's log, except for the topics that stay in the database's log.

    ``payments.audit`` (and its dead letters) is written by the audit log in the
    same transaction as the hash-chained audit record it publishes, so it stays
    in the database; every other topic goes to the broker. Readers, consumer
    groups and the CLI see one log either way.
    """

    def __init__(self, broker: EventLog, database: EventLog, database_topics: frozenset[str]):
        self._broker = broker
        self._database = database
        self._database_topics = database_topics

    @property
    def broker(self) -> EventLog:
        """The broker's own log (for its engine's specific operations and tests)."""
        return self._broker

    def _for(self, topic: str) -> EventLog:
        return self._database if topic in self._database_topics else self._broker

    async def append(self, topic: str, records: Sequence[NewRecord]) -> AppendResult:
        return await self._for(topic).append(topic, records)

    async def append_together(
        self, batches: Sequence[tuple[str, Sequence[NewRecord]]]
    ) -> list[AppendResult]:
        logs = {id(self._for(topic)): self._for(topic) for topic, _ in batches}
        if len(logs) > 1:
            # Atomic across two stores is not a promise either can keep.
            raise ValueError("append_together cannot span the broker and the database")
        (log,) = logs.values() if logs else (self._broker,)
        return await log.append_together(batches)

    async def read(
        self, topic: str, *, tenant: str, after: int | None, limit: int
    ) -> list[StoredRecord]:
        return await self._for(topic).read(topic, tenant=tenant, after=after, limit=limit)

    async def group_read(
        self,
        topic: str,
        group: str,
        *,
        tenant: str,
        consumer: str,
        limit: int,
        visibility_timeout: float,
        max_deliveries: int,
    ) -> list[Delivery]:
        return await self._for(topic).group_read(
            topic, group, tenant=tenant, consumer=consumer, limit=limit,
            visibility_timeout=visibility_timeout, max_deliveries=max_deliveries,
        )  # fmt: skip

    async def group_ack(
        self, topic: str, group: str, *, tenant: str, offsets: Sequence[int]
    ) -> int:
        return await self._for(topic).group_ack(topic, group, tenant=tenant, offsets=offsets)

    async def dead_letters(
        self, topic: str, *, tenant: str, group: str | None, limit: int
    ) -> list[DeadLetter]:
        return await self._for(topic).dead_letters(topic, tenant=tenant, group=group, limit=limit)

    async def replay_dead_letters(
        self, topic: str, *, tenant: str, group: str, dead_letter_offsets: Sequence[int] | None
    ) -> int:
        return await self._for(topic).replay_dead_letters(
            topic, tenant=tenant, group=group, dead_letter_offsets=dead_letter_offsets
        )

    async def offset_at(self, topic: str, *, tenant: str, at: float) -> int | None:
        return await self._for(topic).offset_at(topic, tenant=tenant, at=at)

    async def rewind_group(self, topic: str, group: str, *, tenant: str, offset: int) -> None:
        await self._for(topic).rewind_group(topic, group, tenant=tenant, offset=offset)

    async def group_states(self) -> list[GroupState]:
        on_database = [
            state
            for state in await self._database.group_states()
            if state.topic in self._database_topics
        ]
        return await self._broker.group_states() + on_database

    async def trim(self, topic: str, *, max_records: int) -> int:
        return await self._for(topic).trim(topic, max_records=max_records)

    async def erase_tenant(self, tenant: str) -> int:
        return await self._broker.erase_tenant(tenant) + await self._database.erase_tenant(tenant)

    async def length(self, topic: str) -> int:
        return await self._for(topic).length(topic)

    async def check_writable(self) -> None:
        await self._broker.check_writable()
        await self._database.check_writable()

    async def aclose(self) -> None:
        """Closes the broker's log; the database's log is closed by the store."""
        await self._broker.aclose()
