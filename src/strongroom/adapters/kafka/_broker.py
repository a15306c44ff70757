"""confluent-kafka (librdkafka) behind a small typed, asyncio-friendly surface.

Only this module touches the driver; every failure leaves it as
``StorageUnavailable`` (or ``ConfigurationError`` for a topic the log cannot
use). Calls that block (metadata, topic creation, fetching) run on a small
thread pool of the broker's own, never on the event loop.

Rules:
1. Every topic has exactly one partition, created on demand; a topic that
   exists with more partitions is refused, since the log's per-topic offset
   is the partition's offset.
2. The producer is idempotent with ``acks=all``: the broker writes each record
   once and in order even when librdkafka retries. A thread serves its
   delivery reports and resolves one asyncio future per record through
   ``call_soon_threadsafe``; ``produce`` returns the offsets only when every
   record was acknowledged, and raises as soon as the delivery timeout
   (``message.timeout.ms``) ends without one.
3. Readers are plain consumers without group management, pooled per topic:
   each fetch assigns the partition at an explicit offset, reads, and
   unassigns, so an idle reader fetches nothing in the background. The end of
   the partition is known from the fetch response's high watermark (some
   Kafka-protocol brokers answer the ListOffsets request with a lower value).
4. A reader never asks for an offset past the partition's end: brokers differ
   in how they answer that (an error, or a wait for data).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from functools import partial
from typing import Any, Final, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from strongroom.adapters.kafka._connection import KafkaConnection, explain_tls_failure
from strongroom.errors import ConfigurationError, StorageUnavailable

T = TypeVar("T")

_LOG: Final = logging.getLogger("strongroom.adapters.kafka")
#: Offsets further apart than this are fetched with a new seek rather than read through.
RUN_GAP: Final = 256
#: Readers kept idle per topic; more may exist while fetches run concurrently.
IDLE_READERS_PER_TOPIC: Final = 2
#: Fetches running at once (each holds one consumer and one pool thread).
MAX_CONCURRENT_FETCHES: Final = 6


@dataclass(frozen=True, slots=True)
class Timings:
    """How long the broker may take before the log reports it unavailable (seconds)."""

    #: Producer delivery timeout (``message.timeout.ms``): a record not acknowledged
    #: by then fails its append.
    delivery: float = 5.0
    #: Metadata, topic creation, watermarks and each fetch.
    request: float = 5.0


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A record to produce."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Fetched:
    """A record as the broker holds it."""

    offset: int
    key: bytes
    value: bytes
    headers: dict[str, bytes]


def _failure(exc: BaseException) -> StorageUnavailable:
    if isinstance(exc, StorageUnavailable):
        return exc
    return StorageUnavailable("The Kafka broker is unavailable.")


class _DriverLog:
    """librdkafka's log, passed on to ours; TLS lines are also kept to explain failures
    (a refused client certificate shows only there, not as an error)."""

    def __init__(self, recent: deque[str]) -> None:
        self._recent = recent

    def log(self, level: int, message: str, *args: object) -> None:
        text = message % args if args else message
        if "ssl" in text.lower():
            self._recent.append(text)
        _LOG.log(level, "%s", text)


class _Expired(Exception):
    """A blocking call ran past its deadline."""


class Broker:
    """A producer, an admin client and pooled readers on one Kafka cluster."""

    def __init__(self, connection: KafkaConnection, *, client_id: str, timings: Timings) -> None:
        self._timings = timings
        #: The driver's latest errors, to explain a cluster that does not answer (a
        #: TLS failure is soon followed by "brokers are down", which says less).
        self._recent_errors: deque[str] = deque(maxlen=16)
        common: dict[str, Any] = {
            **connection.client_config(),
            "client.id": client_id,
            "socket.connection.setup.timeout.ms": max(1000, int(timings.request * 1000)),
            "logger": _DriverLog(self._recent_errors),
            "error_cb": self._remember_error,
        }
        self._common = common
        delivery_ms = max(1000, int(timings.delivery * 1000))
        self._producer = Producer(
            {
                **common,
                "enable.idempotence": True,
                "acks": "all",
                "message.timeout.ms": delivery_ms,
                "request.timeout.ms": min(delivery_ms, max(1000, int(timings.request * 1000))),
                "linger.ms": 2,
            }
        )
        self._admin = AdminClient(dict(common))
        self._reader_group = f"{client_id}-readers"
        self._executor = ThreadPoolExecutor(
            max_workers=MAX_CONCURRENT_FETCHES + 2, thread_name_prefix="strongroom-kafka"
        )
        self._fetch_slots = asyncio.Semaphore(MAX_CONCURRENT_FETCHES)
        self._idle: dict[str, list[Consumer]] = {}
        self._topics: set[str] = set()
        self._known_end: dict[str, int] = {}
        self._topic_lock = asyncio.Lock()
        self._stopping = threading.Event()
        self._poller = threading.Thread(
            target=self._serve_deliveries, name="strongroom-kafka-deliveries", daemon=True
        )
        self._poller.start()
        self._closed = False

    # -- plumbing -------------------------------------------------------------

    async def _run(self, work: Callable[[], T]) -> T:
        """Run a blocking driver call on the pool; driver errors become StorageUnavailable."""
        if self._closed:
            raise StorageUnavailable("The Kafka event log is closed.")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, work)
        except (KafkaException, _Expired, FutureTimeout, BufferError, RuntimeError) as exc:
            raise _failure(exc) from exc

    def _remember_error(self, error: KafkaError) -> None:
        self._recent_errors.append(error.str())
        _LOG.warning("kafka client error: %s", error.str())

    def _serve_deliveries(self) -> None:
        while not self._stopping.is_set():
            self._producer.poll(0.05)

    # -- topics ---------------------------------------------------------------

    async def check(self) -> None:
        """Return when the cluster answers a metadata request.

        Raises:
            ConfigurationError: TLS failed (an untrusted certificate, a listener
                without TLS, a client certificate missing).
            StorageUnavailable: it does not answer, within the request timeout.
        """
        try:
            await self._run(lambda: self._admin.list_topics(timeout=self._timings.request))
        except StorageUnavailable:
            for error in reversed(self._recent_errors):
                misconfigured = explain_tls_failure(error)
                if misconfigured is not None:
                    raise misconfigured from None
            raise

    async def ensure_topic(self, name: str) -> None:
        """Create the topic with one partition unless it exists (rule 1)."""
        if name in self._topics:
            return
        async with self._topic_lock:
            if name in self._topics:
                return
            partitions = await self._run(partial(self._create_topic, name))
            if partitions != 1:
                raise ConfigurationError(
                    f"Kafka topic {name!r} has {partitions} partitions; the event log needs "
                    "exactly one (delete it, or choose another STRONGROOM_STREAM_PREFIX)"
                )
            self._topics.add(name)

    def _create_topic(self, name: str) -> int:
        timeout = self._timings.request
        futures: dict[str, Future[None]] = self._admin.create_topics(
            [NewTopic(name, num_partitions=1)],
            operation_timeout=timeout,
            request_timeout=timeout,
        )
        try:
            futures[name].result(timeout=timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
        return self._partitions(name)

    def _partitions(self, name: str) -> int:
        # A topic just created may take a moment to show in the metadata.
        deadline = time.monotonic() + self._timings.request
        while True:
            metadata = self._admin.list_topics(topic=name, timeout=self._timings.request)
            topic = metadata.topics.get(name)
            if topic is not None and topic.error is None and topic.partitions:
                return len(topic.partitions)
            if time.monotonic() >= deadline:
                raise _Expired(f"topic {name} did not show in the metadata")
            time.sleep(0.05)

    async def prepare(self, name: str) -> None:
        """Create the topic if needed, and learn an offset it holds (once per process)."""
        await self.ensure_topic(name)
        if name not in self._known_end:
            self._saw(name, await self.listed_end(name) - 1)

    def known_end(self, name: str) -> int:
        """The highest offset this process knows to exist in the topic (-1: none).

        Offsets only grow: a record produced after this call lands beyond it.
        """
        return self._known_end.get(name, -1)

    def _saw(self, name: str, offset: int) -> None:
        self._known_end[name] = max(offset, self._known_end.get(name, -1))

    async def topic_exists(self, name: str) -> bool:
        """Whether the topic exists on the cluster (without creating it)."""
        if name in self._topics:
            return True
        metadata = await self._run(lambda: self._admin.list_topics(timeout=self._timings.request))
        return name in metadata.topics

    # -- producing ------------------------------------------------------------

    async def produce(self, topic: str, messages: Sequence[Outgoing]) -> list[int]:
        """Produce in order; return each record's offset once all were acknowledged (rule 2).

        Raises:
            StorageUnavailable: a record was refused, or not acknowledged in time.
                Records acknowledged before the failure stay on the broker.
        """
        if self._closed:
            raise StorageUnavailable("The Kafka event log is closed.")
        if not messages:
            return []
        acks = _Acks(asyncio.get_running_loop(), len(messages))
        try:
            for index, message in enumerate(messages):
                self._producer.produce(
                    topic,
                    value=message.value,
                    key=message.key,
                    headers=list(message.headers),
                    on_delivery=partial(acks.delivered, index),
                )
        except (BufferError, KafkaException) as exc:
            # Records already handed over may still be delivered; they are
            # orphans that no index row names (see the log's rules).
            raise _failure(exc) from exc
        # librdkafka reports every record by the delivery timeout; the margin
        # covers the report's way back to the loop.
        try:
            offsets = await asyncio.wait_for(
                asyncio.shield(acks.future), timeout=self._timings.delivery + self._timings.request
            )
        except TimeoutError as exc:
            raise _failure(exc) from exc
        self._saw(topic, max(offsets))
        return offsets

    # -- reading --------------------------------------------------------------

    async def _with_reader(self, topic: str, work: Callable[[Consumer], T]) -> T:
        """Run ``work`` on a pooled reader of ``topic``, on the pool's threads."""
        async with self._fetch_slots:
            idle = self._idle.setdefault(topic, [])
            consumer = idle.pop() if idle else await self._run(self._new_reader)
            try:
                running = self._executor.submit(_unassigned_after, consumer, work)
            except RuntimeError as exc:  # the pool is shut down: the log is closing
                raise _failure(exc) from exc
            try:
                result = await asyncio.wrap_future(running)
            except BaseException as exc:
                # A reader that failed (or whose caller went away) is replaced,
                # and closed only once its thread let go of it.
                running.add_done_callback(lambda _: self._close_later(consumer))
                if isinstance(exc, KafkaException | _Expired):
                    raise _failure(exc) from exc
                raise
            if len(idle) < IDLE_READERS_PER_TOPIC and not self._closed:
                idle.append(consumer)
            else:
                self._close_later(consumer)
            return result

    def _close_later(self, consumer: Consumer) -> None:
        # After the log closed, the pool is gone and the client is left to the
        # garbage collector.
        if not self._closed:
            with contextlib.suppress(RuntimeError):
                self._executor.submit(consumer.close)

    def _new_reader(self) -> Consumer:
        return Consumer(
            {
                **self._common,
                # Required by the client, never joined: readers assign partitions.
                "group.id": self._reader_group,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "error",
                "allow.auto.create.topics": False,
                "fetch.wait.max.ms": 20,
                "queued.max.messages.kbytes": 8192,
            }
        )

    async def fetch(self, topic: str, offsets: Sequence[int]) -> dict[int, Fetched]:
        """The records at ``offsets`` (existing ones; sorted or not), read in runs."""
        wanted = sorted(set(offsets))
        if not wanted:
            return {}
        runs: list[tuple[int, int]] = []
        for offset in wanted:
            if runs and offset - runs[-1][1] < RUN_GAP:
                runs[-1] = (runs[-1][0], offset + 1)
            else:
                runs.append((offset, offset + 1))
        deadline = time.monotonic() + self._timings.request

        def work(consumer: Consumer) -> dict[int, Fetched]:
            found: dict[int, Fetched] = {}
            for start, stop in runs:
                batch, _ = _read(consumer, topic, start, stop, None, deadline)
                found.update((record.offset, record) for record in batch)
            return {offset: found[offset] for offset in wanted if offset in found}

        found = await self._with_reader(topic, work)
        if found:
            self._saw(topic, max(found))
        return found

    async def scan(self, topic: str, start: int, max_records: int) -> tuple[list[Fetched], bool]:
        """Up to ``max_records`` records from ``start``, and whether the end was reached.

        Past the known end (``known_end``), the end is asked for first (rule 4).
        """
        if start > self.known_end(topic) + 1 and start >= await self.end_offset(topic):
            return [], True
        deadline = time.monotonic() + self._timings.request
        batch, at_end = await self._with_reader(
            topic, lambda consumer: _read(consumer, topic, start, None, max_records, deadline)
        )
        if batch:
            self._saw(topic, batch[-1].offset)
        return batch, at_end

    async def end_offset(self, topic: str) -> int:
        """The partition's high watermark (next offset to be written); 0 without the topic."""
        if not await self.topic_exists(topic):
            return 0
        deadline = time.monotonic() + self._timings.request

        def work(consumer: Consumer) -> int:
            partition = TopicPartition(topic, 0)
            low, listed = consumer.get_watermark_offsets(
                partition, timeout=self._timings.request, cached=False
            )
            if listed <= low:
                return listed
            # The listed end may lag behind (rule 3): read from just before it.
            _read(consumer, topic, max(low, listed - 1), None, 1, deadline)
            _, high = consumer.get_watermark_offsets(partition, cached=True)
            return max(high, listed)

        end = await self._with_reader(topic, work)
        self._saw(topic, end - 1)
        return end

    async def listed_end(self, topic: str) -> int:
        """A lower bound of the partition's end: the offset the cluster lists as latest."""

        def work(consumer: Consumer) -> int:
            return consumer.get_watermark_offsets(
                TopicPartition(topic, 0), timeout=self._timings.request, cached=False
            )[1]

        return await self._with_reader(topic, work)

    # -- closing --------------------------------------------------------------

    async def aclose(self) -> None:
        """Deliver what is queued (up to the delivery timeout), then release everything."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        idle = [consumer for consumers in self._idle.values() for consumer in consumers]
        self._idle.clear()

        def close() -> None:
            self._producer.flush(self._timings.delivery)
            self._stopping.set()
            self._poller.join()
            for consumer in idle:
                consumer.close()

        try:
            await loop.run_in_executor(self._executor, close)
        finally:
            self._executor.shutdown(wait=False)


class _Acks:
    """The delivery reports of one ``produce`` call, handed to the loop once, all together.

    Reports arrive on whichever thread serves the producer (the delivery
    thread, or ``flush`` at close), hence the lock.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, count: int) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._offsets = [-1] * count
        self._remaining = count
        self._failed = False
        self.future: asyncio.Future[list[int]] = loop.create_future()
        self.future.add_done_callback(_retrieve)

    def delivered(self, index: int, error: KafkaError | None, message: Message) -> None:
        offset = message.offset()
        with self._lock:
            if error is not None or offset is None or offset < 0:
                self._failed = True
            else:
                self._offsets[index] = offset
            self._remaining -= 1
            if self._remaining:
                return
        # A closed loop raises RuntimeError: nobody waits for these records any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._finish)

    def _finish(self) -> None:
        if self.future.done():
            return
        if self._failed:
            self.future.set_exception(
                StorageUnavailable("The Kafka broker did not take the write.")
            )
        else:
            self.future.set_result(self._offsets)


def _retrieve(future: asyncio.Future[list[int]]) -> None:
    # The caller may have stopped waiting (a timeout); reading the outcome keeps
    # asyncio from reporting it as never retrieved.
    if not future.cancelled():
        future.exception()


def _unassigned_after(consumer: Consumer, work: Callable[[Consumer], T]) -> T:
    try:
        return work(consumer)
    finally:
        consumer.unassign()


def _read(
    consumer: Consumer,
    topic: str,
    start: int,
    stop: int | None,
    max_records: int | None,
    deadline: float,
) -> tuple[list[Fetched], bool]:
    """Records from ``start`` until ``stop`` (exclusive), ``max_records`` or the end of the
    partition, whichever comes first; and whether the end was reached. Blocking."""
    partition = TopicPartition(topic, 0)
    consumer.assign([TopicPartition(topic, 0, start)])
    records: list[Fetched] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Expired(f"reading {topic} from offset {start} timed out")
        message = consumer.poll(min(remaining, 0.25))
        if message is None:
            continue
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                return records, True
            if error.code() in (KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE):
                low, high = consumer.get_watermark_offsets(
                    partition, timeout=max(0.1, remaining), cached=False
                )
                if start < low < high:
                    # Retention deleted the records before ``low``; read on from there.
                    start = low
                    consumer.assign([TopicPartition(topic, 0, start)])
                    continue
                return records, True
            if error.fatal():
                raise KafkaException(error)
            # Anything else (a dropped connection, a leader moving) is retried by
            # the client; the deadline bounds how long that may take.
            continue
        offset = message.offset()
        if offset is None or offset < start:
            continue
        records.append(_fetched(message, offset))
        if (stop is not None and offset + 1 >= stop) or (
            max_records is not None and len(records) >= max_records
        ):
            return records, False
        _, high = consumer.get_watermark_offsets(partition, cached=True)
        if 0 <= high <= offset + 1:
            return records, True


def _fetched(message: Message, offset: int) -> Fetched:
    headers: dict[str, bytes] = {}
    raw = message.headers() or []
    for name, value in raw.items() if isinstance(raw, dict) else raw:
        if isinstance(value, bytes):
            headers[name] = value
        elif isinstance(value, str):
            headers[name] = value.encode()
    return Fetched(offset, message.key() or b"", message.value() or b"", headers)
