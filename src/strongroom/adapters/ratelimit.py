"""Rate limits on the ``limits`` library: in memory by default, Redis when shared.

A limit of ``rate`` per second with ``burst`` is enforced as a sliding window of
``burst`` requests per ``burst / rate`` seconds: a client may spend its burst at
once, and over any longer period averages no more than ``rate``.

In memory, the synchronous strategy is used directly: every call is a few
dictionary operations, and wrapping them in coroutines and locks would cost
more than the check itself on the request path.

Shared through Redis (``RedisRateLimiter``), the same strategy runs as
``limits``' Lua scripts, atomic in Redis, so every gateway counts against one
window per bucket. Its rules:

1. Every key it writes starts with the configured prefix; each bucket is two
   keys (current and previous window) that expire by themselves.
2. A Redis failure or a call slower than ``timeout_seconds`` never fails a
   request: the check is answered by an in-process limiter with the same
   limits, and counted (``on_fallback``). Limiting never stops.
3. After a failure, Redis is left alone for ``retry_seconds``; then one request
   at a time probes it while the others stay in process. The first answer
   switches every check back to Redis.
4. Each switch, to the fallback and back, is logged once, not per request.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter as SharedSlidingWindow
from limits.errors import StorageError
from limits.storage import MemoryStorage
from limits.strategies import SlidingWindowCounterRateLimiter
from limits.util import WindowStats

from strongroom.ports import RateDecision, RateLimiter

if TYPE_CHECKING:
    from redis.asyncio import Redis

DEFAULT_REDIS_PREFIX: Final = "strongroom:ratelimit:"
#: How long one check may wait for Redis before it is answered in process. The
#: check sits on every request's path, so a hung Redis must cost little; but a
#: burst that opens many connections at once takes a few hundred milliseconds,
#: and falling back then would let through more than the shared limit.
DEFAULT_REDIS_TIMEOUT_SECONDS: Final = 1.0
#: How long Redis is left alone after a failure before one request probes it.
DEFAULT_REDIS_RETRY_SECONDS: Final = 1.0
NAMESPACE: Final = "strongroom"

T = TypeVar("T")


class _SweepingMemoryStorage(MemoryStorage):
    """``limits``' memory storage, sweeping expired counters every second.

    The stock storage restarts a timer thread 10 ms after each use to sweep
    expired counters, which on a busy gateway means starting a thread per
    request. Expiry is also checked on every read, so sweeping less often only
    frees memory later; it never lets a request through that should be refused.
    """

    SWEEP_SECONDS: Final = 1.0
    #: Until this moment (``time.monotonic``) a sweep is known to be scheduled:
    #: asking the timer thread whether it is alive costs about a fifth of a hit.
    _sweep_due = 0.0

    def _MemoryStorage__schedule_expiry(self) -> None:
        now = time.monotonic()
        if now < self._sweep_due or self.timer.is_alive():
            return
        sweep = getattr(self, "_MemoryStorage__expire_events")  # noqa: B009 - name-mangled
        self.timer = threading.Timer(self.SWEEP_SECONDS, sweep)
        self.timer.daemon = True
        self.timer.start()
        self._sweep_due = now + self.SWEEP_SECONDS


# ``limits`` wraps these storage methods in an error translator in every subclass,
# so a subclass's calls went through the wrapper twice. Memory storage raises
# nothing to translate (and ours is built with wrap_exceptions off, where the
# wrapper only re-raises): use the plain methods, which are on the request path.
for _name in (
    "incr",
    "get",
    "get_expiry",
    "check",
    "reset",
    "clear",
    "acquire_sliding_window_entry",
    "get_sliding_window",
    "clear_sliding_window",
):
    setattr(_SweepingMemoryStorage, _name, getattr(MemoryStorage, _name).__wrapped__)


class _Items:
    """The ``limits`` item of each (rate, burst), made once: one per configured limit."""

    def __init__(self, namespace: str) -> None:
        self._namespace = namespace
        self._items: dict[tuple[float, int], RateLimitItem] = {}

    def __call__(self, rate: float, burst: int) -> RateLimitItem:
        item = self._items.get((rate, burst))
        if item is None:
            window = max(1, math.ceil(burst / rate))
            item = RateLimitItemPerSecond(burst, window, namespace=self._namespace)
            self._items[(rate, burst)] = item
        return item


def _decision(item: RateLimitItem, allowed: bool, stats: WindowStats) -> RateDecision:
    reset_at = stats.reset_time if stats.reset_time > 0 else time.time() + item.get_expiry()
    return RateDecision(allowed, item.amount, max(0, stats.remaining), reset_at)


class MemoryRateLimiter(RateLimiter):
    """``RateLimiter`` for one process, on ``limits``' in-memory storage.

    Hits go to the storage's sliding-window entry directly, with each bucket's
    storage key made once: the strategy would build the key again on every
    call (about 1 µs, twice a request).
    """

    #: Bucket keys kept; past this the cache starts over (buckets by client IP are unbounded).
    MAX_CACHED_KEYS: Final = 100_000

    def __init__(self, *, namespace: str = NAMESPACE) -> None:
        self._storage = _SweepingMemoryStorage()
        self._limiter = SlidingWindowCounterRateLimiter(self._storage)
        self._item = _Items(namespace)
        self._keys: dict[tuple[str, float, int], str] = {}

    def _acquire(self, item: RateLimitItem, bucket: str, rate: float, burst: int) -> bool:
        key = self._keys.get((bucket, rate, burst))
        if key is None:
            if len(self._keys) >= self.MAX_CACHED_KEYS:
                self._keys.clear()
            key = self._keys[(bucket, rate, burst)] = item.key_for(bucket)
        return self._storage.acquire_sliding_window_entry(key, item.amount, item.get_expiry())

    async def hit(self, bucket: str, *, rate: float, burst: int) -> RateDecision:
        item = self._item(rate, burst)
        allowed = self._acquire(item, bucket, rate, burst)
        return _decision(item, allowed, self._limiter.get_window_stats(item, bucket))

    async def consume(self, bucket: str, *, rate: float, burst: int) -> bool:
        return self._acquire(self._item(rate, burst), bucket, rate, burst)

    async def peek(self, bucket: str, *, rate: float, burst: int) -> RateDecision:
        item = self._item(rate, burst)
        allowed = self._limiter.test(item, bucket)
        return _decision(item, allowed, self._limiter.get_window_stats(item, bucket))


class TransitionLog(Protocol):
    """Where ``RedisRateLimiter`` reports its switches (a structlog logger fits)."""

    def warning(self, event: str, **details: Any) -> Any: ...

    def info(self, event: str, **details: Any) -> Any: ...


class _Unanswered:
    """Redis gave no usable answer: the check goes to the in-process limiter."""


_UNANSWERED: Final = _Unanswered()


class RedisRateLimiter(RateLimiter):
    """``RateLimiter`` shared by every gateway through Redis, in process while Redis fails.

    ``client`` is a ready ``redis.asyncio.Redis``; its connection pool is shared
    and stays the caller's to close. See the module's rules for the fallback.
    """

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = DEFAULT_REDIS_PREFIX,
        fallback: RateLimiter | None = None,
        on_fallback: Callable[[], object] | None = None,
        log: TransitionLog | None = None,
        timeout_seconds: float = DEFAULT_REDIS_TIMEOUT_SECONDS,
        retry_seconds: float = DEFAULT_REDIS_RETRY_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not prefix:
            raise ValueError("the Redis rate-limit prefix must not be empty")
        if timeout_seconds <= 0 or retry_seconds < 0:
            raise ValueError("timeout_seconds must be positive and retry_seconds not negative")
        # ``limits`` types extra options as scalars, but its redis-py bridge takes a
        # ready pool: sharing the caller's keeps one set of connections per gateway.
        pool: Any = client.connection_pool
        # ``limits`` joins its prefix and the key with a colon; taking a trailing
        # one off the prefix keeps every key starting with exactly ``prefix``.
        storage = RedisStorage(
            "async+redis://",
            wrap_exceptions=True,
            implementation="redispy",
            key_prefix=prefix.removesuffix(":"),
            connection_pool=pool,
        )
        self._shared = SharedSlidingWindow(storage)
        self._item = _Items(NAMESPACE)
        self._fallback = fallback or MemoryRateLimiter()
        self._on_fallback = on_fallback
        self._log = log
        self._timeout = timeout_seconds
        self._retry = retry_seconds
        self._monotonic = monotonic
        self._healthy = True
        self._probing = False
        self._down_until = 0.0

    @property
    def shared(self) -> bool:
        """Whether checks currently go to Redis (False while the fallback answers)."""
        return self._healthy

    async def hit(self, bucket: str, *, rate: float, burst: int) -> RateDecision:
        item = self._item(rate, burst)

        async def shared() -> RateDecision:
            allowed = await self._shared.hit(item, bucket)
            return _decision(item, allowed, await self._shared.get_window_stats(item, bucket))

        decision = await self._attempt(shared)
        if isinstance(decision, _Unanswered):
            return await self._fallback.hit(bucket, rate=rate, burst=burst)
        return decision

    async def consume(self, bucket: str, *, rate: float, burst: int) -> bool:
        item = self._item(rate, burst)
        allowed = await self._attempt(lambda: self._shared.hit(item, bucket))
        if isinstance(allowed, _Unanswered):
            return await self._fallback.consume(bucket, rate=rate, burst=burst)
        return bool(allowed)

    async def peek(self, bucket: str, *, rate: float, burst: int) -> RateDecision:
        item = self._item(rate, burst)

        async def shared() -> RateDecision:
            allowed = await self._shared.test(item, bucket)
            return _decision(item, allowed, await self._shared.get_window_stats(item, bucket))

        decision = await self._attempt(shared)
        if isinstance(decision, _Unanswered):
            return await self._fallback.peek(bucket, rate=rate, burst=burst)
        return decision

    async def _attempt(self, work: Callable[[], Awaitable[T]]) -> T | _Unanswered:
        """``work``'s answer from Redis, or ``_UNANSWERED`` (counted) to use the fallback."""
        probe = False
        if not self._healthy:
            if self._probing or self._monotonic() < self._down_until:
                return self._unanswered()
            # One probe at a time: while Redis is down, a burst of requests must
            # not each wait out the timeout to learn it.
            probe = self._probing = True
        try:
            async with asyncio.timeout(self._timeout):
                answer = await work()
        except (StorageError, OSError, TimeoutError) as exc:
            self._failed(exc)
            return self._unanswered()
        finally:
            if probe:
                self._probing = False
        if probe:
            self._healthy = True
            if self._log is not None:
                self._log.info("ratelimit_redis_recovered")
        return answer

    def _failed(self, exc: BaseException) -> None:
        self._down_until = self._monotonic() + self._retry
        # Calls already in flight when Redis went away fail too; only the first
        # failure is a switch worth logging.
        if self._healthy:
            self._healthy = False
            if self._log is not None:
                # The driver's error, not ``limits``' wrapper around it, tells the
                # operator what went wrong (refused, timed out, read-only replica).
                cause = getattr(exc, "storage_error", exc)
                self._log.warning(
                    "ratelimit_redis_unavailable",
                    error=f"{type(cause).__name__}: {cause}".rstrip(": "),
                    fallback="in_process",
                    retry_seconds=self._retry,
                )

    def _unanswered(self) -> _Unanswered:
        if self._on_fallback is not None:
            self._on_fallback()
        return _UNANSWERED
