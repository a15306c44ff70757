"""The event log on a Kafka-protocol broker, with its bookkeeping in the gateway's database.

Records live on the broker, one topic per log topic (``stream_prefix`` +
topic, ``<topic>.dlq`` for dead letters), each with exactly ONE partition: the
port's per-topic offset is the partition's offset, and order holds for every
key. One partition is also this engine's limit: a topic takes what one
partition of the broker takes, and consumers scale through the gateway's
consumer groups, not through partitions.

Kafka transactions are not used (not every Kafka-protocol broker hides
aborted ones from readers). The log is at least once on the broker and
exactly once for readers, through an idempotency index in the gateway's
database (``_index``, table ``kafka_records``).

Rules:
1. An append claims its ids in the index (a committed id is a duplicate),
   produces the records with an idempotent producer (``acks=all``), and when
   the broker acknowledged every one, commits the offsets of ALL the call's
   records, every topic of an ``append_together`` included, in one
   transaction. Only then does it return (``_appender``).
2. A broker failure or timeout fails the append with ``StorageUnavailable``
   and releases its claims: nothing in the index makes the client's retry a
   duplicate, and the retry produces the records again.
3. A reader (``read``, consumer groups) delivers a record only where the
   index says its (tenant, topic, id) lives at THIS offset. Other copies (of
   an append that failed after the broker took some records, or of a gateway
   that crashed between the broker's ack and the index commit) are dropped:
   a retried id yields exactly one delivered copy (``_reader``).
4. A record whose claim is open (its append has not committed yet) is
   undecided: a reader stops before it rather than skip it, since the commit
   may still come and an ``after=`` reader would have stepped over it. Once
   the record is older than ``ORPHAN_GRACE_SECONDS`` it is an orphan and is
   dropped. To make that safe an append commits only within half the grace
   period of its start (on the log's clock, checked again just before
   COMMIT); later it fails with ``StorageUnavailable`` and the client retries.
   Only readers of the same tenant and topic ever wait.
5. Concurrent appends of one gateway share one claim, one produce round and
   one commit (group commit, bounded by ``writer_queue_max_events``, past
   which appends get ``Backpressure``). Gateways appending the same id at
   once take turns through the claim: only one ever produces it.
6. A consumer group's position, pending deliveries and dead letters are rows
   (``_groups``). A group read takes a snapshot, fetches from the broker, and
   commits only if the snapshot still holds (the group row is locked on
   PostgreSQL; SQLite runs one transaction at a time); otherwise it tries
   again. Reads of one group in one gateway take turns.
7. Dead letters are records of ``<topic>.dlq`` in the shared envelope
   (``adapters.dead_letters``), produced as in rule 1 and committed in the
   transaction that removes the pending delivery; replay marks are rows.
8. Kafka cannot delete one tenant's records: ``trim`` deletes nothing
   (retention is the broker's), and ``erase_tenant`` deletes the tenant's
   index rows and group state, so its records are never served again; they
   are sealed under data keys the same erasure destroys (crypto-shredding),
   and age out by the broker's retention.

Where this departs from "look the ids up, produce, then index": the claim of
rule 1 is committed before producing. Without it, two gateways given the same
id at once would both produce it, and every retry racing its original would
leave a second copy on the broker. With it, a record on the broker that no
index row names can never become one that counts (only its own append can
commit it, and that append's claim is gone), so readers drop it at once; the
grace period of rule 4 covers only claims left by a crash.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Final

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from strongroom.adapters.dead_letters import dead_letter_record, dead_letters_from
from strongroom.adapters.group_commit import GroupCommit
from strongroom.adapters.kafka import _groups as groups
from strongroom.adapters.kafka._appender import Appender, Request, new_claim
from strongroom.adapters.kafka._broker import Broker, Timings
from strongroom.adapters.kafka._connection import KafkaConnection
from strongroom.adapters.kafka._index import Identity, Index, erase_tenant_in, settle_in
from strongroom.adapters.kafka._reader import Reader
from strongroom.adapters.kafka._records import check, parse
from strongroom.adapters.sql.engine import translate_errors
from strongroom.domain.topics import dead_letter_topic
from strongroom.errors import StorageUnavailable
from strongroom.ports import (
    AppendResult,
    Clock,
    DeadLetter,
    Delivery,
    EventLog,
    GroupState,
    NewRecord,
    StoredRecord,
    SystemClock,
)

#: How old an undecided record must be before readers give it up as an orphan
#: (rule 4): more than twice what an append may take from its start to its
#: commit (the producer's delivery timeout, 5 s, plus the index transactions).
ORPHAN_GRACE_SECONDS: Final = 30.0
#: How long an append waits for another gateway's claim on the same id.
CLAIM_WAIT_SECONDS: Final = 7.0
#: Records per shared produce round; a single larger append still goes alone.
MAX_BATCH_WEIGHT: Final = 4096
#: Tries of a group read whose snapshot another gateway changed meanwhile (rule 6).
GROUP_READ_ATTEMPTS: Final = 50


class KafkaEventLog(EventLog):
    """``EventLog`` on a Kafka-protocol broker (see the module rules)."""

    def __init__(
        self,
        engine: AsyncEngine,
        broker: Broker,
        *,
        prefix: str,
        max_queued_weight: int,
        clock: Clock | None = None,
        grace: float = ORPHAN_GRACE_SECONDS,
        claim_wait: float = CLAIM_WAIT_SECONDS,
    ) -> None:
        self._engine = engine
        self._broker = broker
        self._prefix = prefix
        self._clock = clock or SystemClock()
        self._index = Index(engine, self._clock, grace=grace)
        self._appender = Appender(
            broker, self._index, self._clock, grace=grace, claim_wait=claim_wait
        )
        self._reader = Reader(broker, self._index, self._clock, grace=grace)
        self._writer: GroupCommit[list[Request], list[AppendResult]] = GroupCommit(
            self._commit,
            max_queued_weight=max_queued_weight,
            max_batch_weight=MAX_BATCH_WEIGHT,
            what="event log",
        )
        self._group_turns: dict[groups.GroupKey, asyncio.Lock] = {}

    @classmethod
    async def open(
        cls,
        connection: KafkaConnection,
        engine: AsyncEngine,
        *,
        prefix: str,
        max_queued_weight: int,
        clock: Clock | None = None,
        timings: Timings | None = None,
    ) -> KafkaEventLog:
        """Connect to the cluster and check that it answers.

        Raises:
            ConfigurationError: TLS with the cluster failed (see ``_connection``).
            StorageUnavailable: the cluster does not answer in time.
        """
        broker = Broker(connection, client_id=f"{prefix}gateway", timings=timings or Timings())
        try:
            await broker.check()
        except BaseException:
            await broker.aclose()
            raise
        return cls(engine, broker, prefix=prefix, max_queued_weight=max_queued_weight, clock=clock)

    def broker_topic(self, topic: str) -> str:
        """The name of a log topic on the broker."""
        return self._prefix + topic

    @property
    def queued_events(self) -> int:
        return self._writer.queued_weight

    # -- writes (rules 1, 2 and 5) --------------------------------------------------

    async def append(self, topic: str, records: Sequence[NewRecord]) -> AppendResult:
        check(records)
        (result,) = await self._writer.submit(
            [(self.broker_topic(topic), records)], weight=max(1, len(records))
        )
        return result

    async def append_together(
        self, batches: Sequence[tuple[str, Sequence[NewRecord]]]
    ) -> list[AppendResult]:
        for _, records in batches:
            check(records)
        return await self._writer.submit(
            [(self.broker_topic(topic), records) for topic, records in batches],
            weight=max(1, sum(len(records) for _, records in batches)),
        )

    async def _commit(self, payloads: list[list[Request]]) -> list[list[AppendResult] | Exception]:
        # Records are checked before they are queued, so what fails here (the
        # broker, the index) fails every call of the round alike.
        try:
            results = await self._appender.append(
                [request for calls in payloads for request in calls]
            )
        except Exception as exc:
            return [exc] * len(payloads)
        outcomes: list[list[AppendResult] | Exception] = []
        start = 0
        for calls in payloads:
            outcomes.append(results[start : start + len(calls)])
            start += len(calls)
        return outcomes

    # -- reads (rules 3 and 4) ------------------------------------------------------

    async def read(
        self, topic: str, *, tenant: str, after: int | None, limit: int
    ) -> list[StoredRecord]:
        if limit <= 0:
            return []
        records, _ = await self._reader.deliverable(
            self.broker_topic(topic), topic, tenant, -1 if after is None else after, limit
        )
        return records

    async def offset_at(self, topic: str, *, tenant: str, at: float) -> int | None:
        return await self._index.offset_at(self.broker_topic(topic), tenant, at)

    async def length(self, topic: str) -> int:
        # The partition's end: every record the broker holds or held, orphans
        # included (offsets are never reused).
        return await self._broker.end_offset(self.broker_topic(topic))

    # -- consumer groups (rules 6 and 7) ----------------------------------------------

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
        key = groups.GroupKey(tenant, self.broker_topic(topic), group)
        turn = self._group_turns.setdefault(key, asyncio.Lock())
        async with turn:
            for _ in range(GROUP_READ_ATTEMPTS):
                deliveries = await self._try_group_read(
                    topic, key, consumer, limit, visibility_timeout, max_deliveries
                )
                if deliveries is not None:
                    return deliveries
                # Another gateway moved the group meanwhile; jitter keeps two
                # gateways from colliding again in lockstep.
                await asyncio.sleep(0.002 + random.random() * 0.01)  # noqa: S311 - not security relevant
        raise StorageUnavailable("The consumer group is busy; retry shortly.")

    async def _try_group_read(
        self,
        topic: str,
        key: groups.GroupKey,
        consumer: str,
        limit: int,
        visibility_timeout: float,
        max_deliveries: int,
    ) -> list[Delivery] | None:
        """One group read, or None when the group changed before it could commit."""
        now = self._clock.now()
        async with translate_errors():
            try:
                async with self._engine.begin() as connection:
                    snapshot = await groups.snapshot(connection, key, now, limit)
            except IntegrityError:
                return None  # another gateway created the group at the same time
        expired = await self._reader.records_at(
            key.topic, topic, key.tenant, [offset for offset, _ in snapshot.expired]
        )
        again: list[Delivery] = []
        dead: list[tuple[StoredRecord, int]] = []
        gone: list[int] = []
        for offset, count in snapshot.expired:
            record = expired.get(offset)
            if record is None:
                gone.append(offset)
            elif count >= max_deliveries:
                dead.append((record, count))
            else:
                again.append(Delivery(record, count + 1))
        fresh: list[StoredRecord] = []
        cursor = snapshot.cursor
        if len(again) < limit:
            fresh, cursor = await self._reader.deliverable(
                key.topic, topic, key.tenant, snapshot.cursor - 1, limit - len(again)
            )
        claim = new_claim()
        letters = await self._produce_dead_letters(topic, key, dead, claim, now)
        if letters is None:
            return None
        try:
            async with translate_errors(), self._engine.begin() as connection:
                if await groups.position(connection, key, lock=True) != snapshot.cursor or (
                    await groups.expired(connection, key, now, limit) != snapshot.expired
                ):
                    applied = False
                else:
                    applied = True
                    await groups.redeliver(
                        connection, key, [d.record.offset for d in again],
                        consumer=consumer, visible_at=now + visibility_timeout,
                    )  # fmt: skip
                    await groups.settle(connection, key, [*gone, *(r.offset for r, _ in dead)])
                    offsets = [record.offset for record in fresh]
                    # A replayed dead letter may wait at an offset the group reaches again.
                    await groups.settle(connection, key, offsets)
                    await groups.deliver(
                        connection, key, offsets, consumer=consumer,
                        visible_at=now + visibility_timeout,
                    )  # fmt: skip
                    if cursor != snapshot.cursor:
                        await groups.move(connection, key, cursor)
                    if letters:
                        if not self._appender.in_time(now):
                            raise StorageUnavailable("The group read took too long; retry it.")
                        await settle_in(connection, claim, letters, now)
                        originals = [record.offset for record, _ in dead]
                        await groups.add_dead_letters(
                            connection,
                            key,
                            [
                                (at, original)
                                for (_, at), original in zip(letters, originals, strict=True)
                            ],
                        )
        except Exception:
            if letters:
                await self._appender.release(claim, [identity for identity, _ in letters])
            raise
        if not applied:
            if letters:
                await self._appender.release(claim, [identity for identity, _ in letters])
            return None
        deliveries = [*again, *(Delivery(record, 1) for record in fresh)]
        deliveries.sort(key=lambda delivery: delivery.record.offset)
        return deliveries

    async def _produce_dead_letters(
        self,
        topic: str,
        key: groups.GroupKey,
        dead: Sequence[tuple[StoredRecord, int]],
        claim: str,
        now: float,
    ) -> list[tuple[Identity, int]] | None:
        """Claim and produce the dead letters (rule 7); committed by the caller. None when
        one was stored already, which only a group that moved on meanwhile explains."""
        if not dead:
            return []
        letter_topic = self.broker_topic(dead_letter_topic(topic))
        letters = [dead_letter_record(record, key.group, count, now) for record, count in dead]
        identities = [(letter_topic, letter.tenant, letter.record_id) for letter in letters]
        if await self._appender.claim(identities, claim, now):
            await self._appender.release(claim, identities)
            return None
        return await self._appender.produce(list(zip(identities, letters, strict=True)), claim, now)

    async def group_ack(
        self, topic: str, group: str, *, tenant: str, offsets: Sequence[int]
    ) -> int:
        if not offsets:
            return 0
        key = groups.GroupKey(tenant, self.broker_topic(topic), group)
        async with translate_errors(), self._engine.begin() as connection:
            return await groups.settle(connection, key, list(offsets))

    async def dead_letters(
        self, topic: str, *, tenant: str, group: str | None, limit: int
    ) -> list[DeadLetter]:
        async with translate_errors(), self._engine.connect() as connection:
            rows = await groups.dead_letters(
                connection, self.broker_topic(topic), tenant, group, limit
            )
        letter_topic = self.broker_topic(dead_letter_topic(topic))
        fetched = await self._broker.fetch(letter_topic, [row.dead_letter_offset for row in rows])
        stored = []
        for row in rows:
            found = fetched.get(row.dead_letter_offset)
            parsed = None if found is None else parse(found)
            if parsed is not None and parsed.tenant == tenant:
                stored.append((row.dead_letter_offset, parsed.payload, row.replayed_at))
        return dead_letters_from(stored, group, limit)

    async def replay_dead_letters(
        self,
        topic: str,
        *,
        tenant: str,
        group: str,
        dead_letter_offsets: Sequence[int] | None,
    ) -> int:
        now = self._clock.now()
        key = groups.GroupKey(tenant, self.broker_topic(topic), group)
        wanted = None if dead_letter_offsets is None else set(dead_letter_offsets)
        async with translate_errors(), self._engine.begin() as connection:
            # The group row's lock makes concurrent replays of one letter take turns.
            if await groups.position(connection, key, lock=True) is None:
                return 0
            chosen = [
                row
                for row in await groups.dead_letters(connection, key.topic, tenant, group, None)
                if row.replayed_at is None and (wanted is None or row.dead_letter_offset in wanted)
            ]
            if not chosen:
                return 0
            await groups.mark_replayed(
                connection, key, [row.dead_letter_offset for row in chosen], now
            )
            originals = sorted({row.offset for row in chosen})
            await groups.settle(connection, key, originals)
            # Deliverable now, with a fresh count: the next read hands them out.
            await groups.deliver(
                connection, key, originals, consumer="", visible_at=now, deliveries=0
            )
            return len(chosen)

    async def rewind_group(self, topic: str, group: str, *, tenant: str, offset: int) -> None:
        key = groups.GroupKey(tenant, self.broker_topic(topic), group)
        async with translate_errors(), self._engine.begin() as connection:
            await groups.rewind(connection, key, max(0, offset), self._clock.now())

    async def group_states(self) -> list[GroupState]:
        async with translate_errors(), self._engine.connect() as connection:
            rows = await groups.states(connection)
        # The database may also hold groups of another prefix (an earlier
        # configuration); those are not this log's topics.
        return [
            GroupState(
                row.topic.removeprefix(self._prefix), row.tenant, row.group, row.lag,
                row.pending, row.dead_letters,
            )
            for row in rows
            if row.topic.startswith(self._prefix)
        ]  # fmt: skip

    # -- maintenance (rule 8) -----------------------------------------------------------

    async def trim(self, topic: str, *, max_records: int) -> int:
        # The broker's retention deletes records, never the gateway.
        return 0

    async def erase_tenant(self, tenant: str) -> int:
        async with translate_errors(), self._engine.begin() as connection:
            erased = await erase_tenant_in(connection, tenant)
            await groups.erase_tenant_in(connection, tenant)
        return erased

    async def check_writable(self) -> None:
        self._writer.check_capacity()
        await self._broker.check()

    async def aclose(self) -> None:
        """Commit what is queued, then close the broker's clients. Idempotent."""
        try:
            await self._writer.aclose()
        finally:
            await self._broker.aclose()
