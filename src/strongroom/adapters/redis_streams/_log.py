"""``EventLog`` on Redis Streams, for several gateways sharing one Redis.

Rules:
1. Every call that writes is one Lua script (``_scripts``), atomic in Redis:
   the idempotency check and the append of an ``append_together`` cover all
   its topics at once, and a consumer group's read, with its redeliveries and
   dead letters, cannot interleave with another gateway's.
2. A call returns only after Redis answered it; what Redis acknowledged is in
   the stream (how long it stays there across a Redis restart is the server's
   ``appendfsync``; see ``docs/streams.md``).
3. Redis errors, a refused connection and a timeout become
   ``StorageUnavailable``; a script either ran whole or not at all, so nothing
   is half-recorded. A reply lost after the script ran is answered as a
   failure, and the caller's retry finds the records stored: duplicates, never
   second copies.
4. Visibility deadlines are the gateway clock's (``Clock``), kept beside each
   group's pending list, so redelivery does not depend on the Redis server's
   idle times; delivery counts are the pending list's own.
5. Records in flight are bounded by ``writer_queue_max_events``: past it an
   append is refused with ``Backpressure`` before anything is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Final

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from strongroom.adapters.dead_letters import dead_letter_record, dead_letters_from
from strongroom.adapters.redis_streams import _scripts
from strongroom.adapters.redis_streams._keys import KeySpace, group_member, parse_group_member
from strongroom.domain.topics import DEAD_LETTER_SUFFIX, dead_letter_topic
from strongroom.errors import Backpressure, StorageUnavailable
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

#: A stream entry as redis-py returns it: its id and its fields.
Entry = tuple[bytes, dict[bytes, bytes]]

#: Records read per ``XRANGE`` when a call walks a whole stream.
PAGE: Final = 1000
#: Records one trim script deletes at most, so that it never holds Redis for long.
TRIM_CHUNK: Final = 5000
#: Rounds of a group read that finds new records due for the dead-letter topic
#: (another gateway changing the group between two rounds makes another one).
DEAD_LETTER_ROUNDS: Final = 5
#: How long ``aclose`` waits for calls under way (a reply takes at most the
#: client's reply timeout).
CLOSE_WAIT_SECONDS: Final = 10.0
#: Rounds of erasure (a round can only miss what was appended during the previous one).
ERASE_ROUNDS: Final = 10


def _unavailable(exc: Exception) -> StorageUnavailable:
    reason = type(exc).__name__
    if isinstance(exc, ResponseError) and str(exc):
        # The error code only (OOM, READONLY, MISCONF, NOREPLICAS, ...): it names
        # the server's state and carries nothing of the records.
        reason = f"{reason} {str(exc).split()[0]}"
    return StorageUnavailable(f"The event log (Redis) is unavailable: {reason}.")


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except (RedisError, OSError) as exc:
        raise _unavailable(exc) from exc


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _fields(flat: Sequence[Any]) -> dict[bytes, bytes]:
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


def _record(topic: str, tenant: str, offset: int, fields: dict[bytes, bytes]) -> StoredRecord:
    return StoredRecord(
        topic=topic,
        offset=offset,
        tenant=tenant,
        record_id=_text(fields[_scripts.FIELD_ID]),
        key=_text(fields[_scripts.FIELD_KEY]),
        appended_at=float(fields[_scripts.FIELD_AT]),
        payload=bytes(fields[_scripts.FIELD_PAYLOAD]),
    )


def _offset(entry_id: bytes | str) -> int:
    return int(_text(entry_id).partition("-")[0]) - 1


def _entry_id(offset: int) -> str:
    return f"{offset + 1}-0"


class RedisEventLog(EventLog):
    """``EventLog`` on Redis Streams; handed a ready ``redis.asyncio`` client, which it owns."""

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str,
        max_in_flight: int,
        clock: Clock | None = None,
    ) -> None:
        self._client = client
        self._keys = KeySpace(prefix)
        self._max_in_flight = max_in_flight
        self._in_flight = 0
        self._clock = clock or SystemClock()
        self._closed = False
        self._running = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._scripts = {
            name: client.register_script(getattr(_scripts, name))
            for name in (
                "APPEND", "GROUP_READ", "GROUP_ACK", "REPLAY", "REWIND", "OFFSET_AT", "TRIM",
                "ERASE", "WRITABLE",
            )
        }  # fmt: skip

    @property
    def queued_events(self) -> int:
        """Records sent to Redis and not answered yet."""
        return self._in_flight

    @asynccontextmanager
    async def _using(self) -> AsyncIterator[None]:
        """Around every command: refused once closing, counted so ``aclose`` can wait."""
        if self._closed:
            raise StorageUnavailable("The event log is closed.")
        self._running += 1
        self._idle.clear()
        try:
            with _translated():
                yield
        finally:
            self._running -= 1
            if not self._running:
                self._idle.set()

    async def _run(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        async with self._using():
            return await self._scripts[script](keys=list(keys), args=list(args))

    async def _call(self, operation: Callable[[], Awaitable[Any]]) -> Any:
        async with self._using():
            return await operation()

    async def _xrange(self, stream: str, start: str, count: int) -> list[Entry]:
        """Up to ``count`` entries from ``start`` (an entry id, ``(``-prefixed to exclude it)."""
        entries: list[Entry] = await self._call(
            lambda: self._client.xrange(stream, start, "+", count=count)
        )
        return entries

    async def _members(self, key: str) -> list[str]:
        """The members of a registry set, sorted."""
        members: set[bytes] = await self._call(lambda: self._client.smembers(key))
        return sorted(_text(member) for member in members)

    def _check_capacity(self, weight: int) -> None:
        if self._in_flight and self._in_flight + weight > self._max_in_flight:
            raise Backpressure("The event log writer is at capacity; retry shortly.")

    # -- appends ----------------------------------------------------------------

    async def append(self, topic: str, records: Sequence[NewRecord]) -> AppendResult:
        (result,) = await self.append_together([(topic, records)])
        return result

    async def append_together(
        self, batches: Sequence[tuple[str, Sequence[NewRecord]]]
    ) -> list[AppendResult]:
        weight = sum(len(records) for _, records in batches)
        if weight == 0:
            return [AppendResult((), ()) for _ in batches]
        self._check_capacity(weight)
        pairs: dict[tuple[str, str], int] = {}
        keys: list[str] = []
        pair_args: list[str] = []
        record_args: list[Any] = []
        for topic, records in batches:
            for record in records:
                number = pairs.get((topic, record.tenant))
                if number is None:
                    number = pairs[(topic, record.tenant)] = len(pairs) + 1
                    keys += self._keys.pair(topic, record.tenant)
                    pair_args += [topic, record.tenant]
                record_args += [number, record.record_id, record.key, record.payload]
        args = [repr(self._clock.now()), len(pairs), *pair_args, *record_args]
        self._in_flight += weight
        try:
            flags = await self._run("APPEND", keys, args)
        finally:
            self._in_flight -= weight
        results: list[AppendResult] = []
        position = 0
        for _, records in batches:
            accepted: list[str] = []
            duplicates: list[str] = []
            for record in records:
                (accepted if flags[position] else duplicates).append(record.record_id)
                position += 1
            results.append(AppendResult(tuple(accepted), tuple(duplicates)))
        return results

    # -- reads ------------------------------------------------------------------

    async def read(
        self, topic: str, *, tenant: str, after: int | None, limit: int
    ) -> list[StoredRecord]:
        start = "-" if after is None or after < 0 else _entry_id(after + 1)
        entries = await self._xrange(self._keys.log(topic, tenant), start, limit)
        return [_record(topic, tenant, _offset(entry_id), fields) for entry_id, fields in entries]

    async def dead_letters(
        self, topic: str, *, tenant: str, group: str | None, limit: int
    ) -> list[DeadLetter]:
        letters_topic = dead_letter_topic(topic)
        stream = self._keys.log(letters_topic, tenant)
        marks = await self._call(
            lambda: self._client.hgetall(self._keys.replayed(letters_topic, tenant))
        )
        replayed = {int(offset): float(at) for offset, at in marks.items()}
        letters: list[DeadLetter] = []
        start = "-"
        while len(letters) < limit:
            page = await self._xrange(stream, start, PAGE)
            rows = [
                (offset, bytes(fields[_scripts.FIELD_PAYLOAD]), replayed.get(offset))
                for offset, fields in ((_offset(entry_id), fields) for entry_id, fields in page)
            ]
            letters += dead_letters_from(rows, group, limit - len(letters))
            if len(page) < PAGE:
                break
            start = "(" + _text(page[-1][0])
        return letters

    async def _waiting_letters(self, topic: str, tenant: str) -> list[DeadLetter]:
        """The tenant's dead letters of ``topic`` not replayed yet, oldest first: found
        through the ``waiting`` index, so their number, not the dead-letter topic's
        length, is what this costs."""
        members = await self._call(
            lambda: self._client.zrange(self._keys.waiting(topic, tenant), 0, -1)
        )
        offsets = sorted(int(member) for member in members)
        stream = self._keys.log(dead_letter_topic(topic), tenant)
        rows: list[tuple[int, bytes, float | None]] = []
        for start in range(0, len(offsets), PAGE):
            chunk = offsets[start : start + PAGE]

            async def fetch(chunk: list[int] = chunk) -> list[list[Entry]]:
                async with self._client.pipeline(transaction=False) as pipeline:
                    for offset in chunk:
                        pipeline.xrange(stream, _entry_id(offset), _entry_id(offset))
                    found: list[list[Entry]] = await pipeline.execute()
                    return found

            for entries in await self._call(fetch):
                rows += [
                    (_offset(entry_id), bytes(fields[_scripts.FIELD_PAYLOAD]), None)
                    for entry_id, fields in entries
                ]
        return dead_letters_from(rows, None, None)

    async def offset_at(self, topic: str, *, tenant: str, at: float) -> int | None:
        found = await self._run("OFFSET_AT", [self._keys.log(topic, tenant)], [repr(float(at))])
        return None if found is None else int(found)

    async def length(self, topic: str) -> int:
        # The next offset to hand out, as on the other engines: offsets are
        # dense from 0, and erased or trimmed records leave their offsets unused.
        counted = await self._call(lambda: self._client.hget(self._keys.topic(topic), "next"))
        return 0 if counted is None else int(counted)

    # -- consumer groups --------------------------------------------------------

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
        now = self._clock.now()
        letters_topic = dead_letter_topic(topic)
        keys = [
            self._keys.log(topic, tenant),
            self._keys.due(topic, tenant, group),
            self._keys.tenant_groups(tenant),
            self._keys.group_tenants(),
            *self._keys.pair(letters_topic, tenant),
            self._keys.topic_tenants(topic),
            self._keys.waiting(topic, tenant),
        ]
        head = [
            group, consumer, limit, repr(now), repr(now + visibility_timeout), max_deliveries,
            group_member(topic, group), letters_topic, tenant, topic,
        ]  # fmt: skip
        prepared: list[Any] = []
        for _ in range(DEAD_LETTER_ROUNDS):
            done, rows = await self._run("GROUP_READ", keys, [*head, *prepared])
            if done:
                deliveries = [
                    Delivery(_record(topic, tenant, int(offset), _fields(fields)), int(count))
                    for offset, count, fields in rows
                ]
                deliveries.sort(key=lambda delivery: delivery.record.offset)
                return deliveries
            # The shared envelope is made here, then appended by the script in
            # the same step that settles the record.
            for offset, count, fields in rows:
                record = _record(topic, tenant, int(offset), _fields(fields))
                letter = dead_letter_record(record, group, int(count), now)
                prepared += [int(offset), int(count), letter.record_id, letter.key, letter.payload]
        raise StorageUnavailable("The consumer group kept changing during the read; retry.")

    async def group_ack(
        self, topic: str, group: str, *, tenant: str, offsets: Sequence[int]
    ) -> int:
        if not offsets:
            return 0
        keys = [self._keys.log(topic, tenant), self._keys.due(topic, tenant, group)]
        return int(await self._run("GROUP_ACK", keys, [group, *offsets]))

    async def replay_dead_letters(
        self,
        topic: str,
        *,
        tenant: str,
        group: str,
        dead_letter_offsets: Sequence[int] | None,
    ) -> int:
        wanted = None if dead_letter_offsets is None else set(dead_letter_offsets)
        chosen = [
            letter
            for letter in await self._waiting_letters(topic, tenant)
            if letter.group == group and (wanted is None or letter.dead_letter_offset in wanted)
        ]
        if not chosen:
            return 0
        keys = [
            self._keys.log(topic, tenant),
            self._keys.due(topic, tenant, group),
            self._keys.replayed(dead_letter_topic(topic), tenant),
            self._keys.waiting(topic, tenant),
        ]
        args: list[Any] = [group, repr(self._clock.now()), _scripts.REPLAY_CONSUMER]
        for letter in chosen:
            args += [letter.dead_letter_offset, letter.offset]
        return int(await self._run("REPLAY", keys, args))

    async def rewind_group(self, topic: str, group: str, *, tenant: str, offset: int) -> None:
        keys = [
            self._keys.log(topic, tenant),
            self._keys.due(topic, tenant, group),
            self._keys.tenant_groups(tenant),
            self._keys.group_tenants(),
            self._keys.tenant_topics(tenant),
            self._keys.topic_tenants(topic),
        ]
        args = [group, max(0, offset), group_member(topic, group), tenant, topic]
        await self._run("REWIND", keys, args)

    async def group_states(self) -> list[GroupState]:
        states: list[GroupState] = []
        for tenant in await self._members(self._keys.group_tenants()):
            members = await self._members(self._keys.tenant_groups(tenant))
            groups = sorted(parse_group_member(member) for member in members)
            dead: dict[str, Counter[str]] = {}
            for topic, group in groups:
                info = await self._group_info(self._keys.log(topic, tenant), group)
                if info is None:
                    continue
                if topic not in dead:
                    dead[topic] = Counter(
                        letter.group for letter in await self._waiting_letters(topic, tenant)
                    )
                states.append(
                    GroupState(
                        topic=topic,
                        tenant=tenant,
                        group=group,
                        lag=await self._lag(self._keys.log(topic, tenant), info),
                        pending=int(info["pending"]),
                        dead_letters=dead[topic][group],
                    )
                )
        states.sort(key=lambda state: (state.topic, state.tenant, state.group))
        return states

    async def _group_info(self, stream: str, group: str) -> dict[str, Any] | None:
        async with self._using():
            try:
                groups = await self._client.xinfo_groups(stream)
            except ResponseError:
                # The stream was erased after the registry was read.
                return None
        for info in groups:
            if _text(info["name"]) == group:
                return {_text(key): value for key, value in info.items()}
        return None

    async def _lag(self, stream: str, info: dict[str, Any]) -> int:
        if info.get("lag") is not None:
            return int(info["lag"])
        # Redis cannot tell (a group rewound into the middle of its stream):
        # the records after the group's position are counted.
        lag = 0
        start = "(" + _text(info["last-delivered-id"])
        while True:
            page = await self._xrange(stream, start, PAGE)
            lag += len(page)
            if len(page) < PAGE:
                return lag
            start = "(" + _text(page[-1][0])

    # -- retention and erasure --------------------------------------------------

    async def trim(self, topic: str, *, max_records: int) -> int:
        keep = max(0, max_records)
        # The topic whose dead letters ``topic`` holds, if it is a dead-letter topic.
        letters_of = (
            topic.removesuffix(DEAD_LETTER_SUFFIX) if topic.endswith(DEAD_LETTER_SUFFIX) else None
        )
        deleted = 0
        for tenant in await self._members(self._keys.topic_tenants(topic)):
            keys = [
                self._keys.log(topic, tenant),
                self._keys.ids(topic, tenant),
                self._keys.waiting(topic, tenant),
            ]
            if letters_of is None:
                keys += keys[:2]
            else:
                keys += [
                    self._keys.replayed(topic, tenant),
                    self._keys.waiting(letters_of, tenant),
                ]
            more = 1
            while more:
                count, more = await self._run(
                    "TRIM", keys, [keep, TRIM_CHUNK, int(letters_of is not None)]
                )
                deleted += int(count)
        return deleted

    async def erase_tenant(self, tenant: str) -> int:
        erased = 0
        for _ in range(ERASE_ROUNDS):
            topics = await self._members(self._keys.tenant_topics(tenant))
            members = await self._members(self._keys.tenant_groups(tenant))
            if not topics and not members:
                return erased
            keys = [
                self._keys.tenant_topics(tenant),
                self._keys.tenant_groups(tenant),
                self._keys.group_tenants(),
            ]
            for topic in topics:
                keys += [
                    self._keys.log(topic, tenant),
                    self._keys.ids(topic, tenant),
                    self._keys.replayed(topic, tenant),
                    self._keys.waiting(topic, tenant),
                    self._keys.topic_tenants(topic),
                ]
            for member in members:
                topic, group = parse_group_member(member)
                keys.append(self._keys.due(topic, tenant, group))
            erased += int(await self._run("ERASE", keys, [tenant, len(topics), *topics, *members]))
        raise StorageUnavailable("The tenant's streams kept growing during erasure; retry.")

    # -- health -----------------------------------------------------------------

    async def check_writable(self) -> None:
        self._check_capacity(1)
        # A script that may write is refused whole by a Redis that would refuse
        # an append (read-only replica, out of memory, failed background save).
        await self._run("WRITABLE", [], [])

    async def aclose(self) -> None:
        """Refuse new calls, let those under way get their answers, then close the
        connections. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), CLOSE_WAIT_SECONDS)
        await self._client.aclose()
