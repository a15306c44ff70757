"""The shared rate limiter when Redis does not answer, and when it comes back.

1. Redis refusing connections: every check is answered in process with the same
   limits (limiting never stops), quickly, each one counted, logged once.
2. Redis hanging: a check waits at most the timeout, once; until the retry time
   passes, checks do not wait for Redis at all.
3. While Redis is down, one request at a time probes it; the others stay in
   process and do not wait.
4. When Redis answers again the limiter goes back to it, logged once; each
   switch (away and back) is logged once, however many requests cross it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from shared_ratelimit_support import Counter, Door, RecordingLog, Silent, client_for

from strongroom.adapters.ratelimit import RedisRateLimiter

RATE = 0.01
UNAVAILABLE = ("warning", "ratelimit_redis_unavailable")
RECOVERED = ("info", "ratelimit_redis_recovered")


class FakeMonotonic:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fallbacks() -> Counter:
    return Counter()


@pytest.fixture
def log() -> RecordingLog:
    return RecordingLog()


@pytest.fixture
async def silent() -> AsyncIterator[Silent]:
    async with Silent() as server:
        yield server


@pytest.fixture
async def silent_client(silent: Silent) -> AsyncIterator[Redis]:
    client = client_for(f"redis://127.0.0.1:{silent.port}/0")
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def door_client(door: Door) -> AsyncIterator[Redis]:
    client = client_for(door.url)
    try:
        yield client
    finally:
        await client.aclose()


async def test_a_refused_redis_still_limits_in_process_counted_and_logged_once(
    refused_client: Redis, fallbacks: Counter, log: RecordingLog
) -> None:
    limiter = RedisRateLimiter(refused_client, on_fallback=fallbacks, log=log)
    started = time.monotonic()

    decisions = [await limiter.hit("key:k1", rate=RATE, burst=3) for _ in range(4)]
    consumed = [await limiter.consume("tenant:t1", rate=RATE, burst=2) for _ in range(3)]
    peeked = await limiter.peek("tenant:t1", rate=RATE, burst=2)

    assert time.monotonic() - started < 1.0
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert {d.limit for d in decisions} == {3}
    assert decisions[-1].reset_at > time.time()
    assert consumed == [True, True, False]
    assert (peeked.allowed, peeked.remaining) == (False, 0)
    assert fallbacks.count == 8
    assert not limiter.shared
    assert log.events() == [UNAVAILABLE]
    assert log.lines[0][2]["error"].startswith("ConnectionError: ")
    assert log.lines[0][2]["fallback"] == "in_process"


async def test_a_hung_redis_costs_one_timeout_then_nothing_until_the_retry_time(
    silent: Silent, silent_client: Redis, fallbacks: Counter, log: RecordingLog
) -> None:
    limiter = RedisRateLimiter(
        silent_client, on_fallback=fallbacks, log=log, timeout_seconds=0.3, retry_seconds=60
    )

    started = time.monotonic()
    first = await limiter.hit("key:k1", rate=RATE, burst=3)
    first_took = time.monotonic() - started
    started = time.monotonic()
    rest = [await limiter.hit("key:k1", rate=RATE, burst=3) for _ in range(20)]
    rest_took = time.monotonic() - started

    assert 0.25 <= first_took < 1.0
    assert rest_took < 0.2
    assert log.lines[0][2]["error"] == "TimeoutError"
    assert first.allowed
    assert sum(d.allowed for d in rest) == 2
    assert silent.connections == 1
    assert fallbacks.count == 21
    assert log.events() == [UNAVAILABLE]


async def test_one_request_at_a_time_probes_a_redis_that_is_down(
    silent: Silent, silent_client: Redis, fallbacks: Counter
) -> None:
    limiter = RedisRateLimiter(
        silent_client, on_fallback=fallbacks, timeout_seconds=0.3, retry_seconds=0
    )
    await limiter.hit("key:k1", rate=RATE, burst=100)

    async def timed() -> float:
        started = time.monotonic()
        await limiter.hit("key:k1", rate=RATE, burst=100)
        return time.monotonic() - started

    took = await asyncio.gather(*(timed() for _ in range(20)))

    waited = [t for t in took if t >= 0.25]
    assert len(waited) == 1
    assert max(t for t in took if t < 0.25) < 0.2
    assert silent.connections == 2
    assert fallbacks.count == 21


async def test_redis_coming_back_is_used_again_and_each_switch_is_logged_once(
    door: Door,
    door_client: Redis,
    redis_client: Redis,
    redis_prefix: str,
    fallbacks: Counter,
    log: RecordingLog,
) -> None:
    clock = FakeMonotonic()
    limiter = RedisRateLimiter(
        door_client,
        prefix=redis_prefix,
        on_fallback=fallbacks,
        log=log,
        retry_seconds=5,
        monotonic=clock,
    )

    down = [await limiter.hit("key:k1", rate=RATE, burst=10) for _ in range(3)]
    await door.open()
    clock.now += 4  # Redis answers again, but the retry time has not passed
    still_down = await limiter.hit("key:k1", rate=RATE, burst=10)
    clock.now += 2
    back = [await limiter.hit("key:k1", rate=RATE, burst=10) for _ in range(3)]
    stored = [key async for key in redis_client.scan_iter(match=redis_prefix + "*")]

    assert [d.remaining for d in down] == [9, 8, 7]
    assert still_down.remaining == 6
    assert fallbacks.count == 4
    assert limiter.shared
    # Back on Redis, which has not seen the requests answered in process.
    assert [d.remaining for d in back] == [9, 8, 7]
    assert len(stored) == 1
    assert log.events() == [UNAVAILABLE, RECOVERED]

    await door.shut()
    again = [await limiter.hit("key:k1", rate=RATE, burst=10) for _ in range(3)]

    assert all(d.allowed for d in again)
    assert not limiter.shared
    assert fallbacks.count == 7
    assert log.events() == [UNAVAILABLE, RECOVERED, UNAVAILABLE]


async def test_a_probe_that_fails_keeps_the_fallback_without_logging_again(
    refused_client: Redis, fallbacks: Counter, log: RecordingLog
) -> None:
    clock = FakeMonotonic()
    limiter = RedisRateLimiter(
        refused_client, on_fallback=fallbacks, log=log, retry_seconds=1, monotonic=clock
    )

    for _ in range(5):
        await limiter.consume("key:k1", rate=RATE, burst=100)
        clock.now += 2

    assert not limiter.shared
    assert fallbacks.count == 5
    assert log.events() == [UNAVAILABLE]


@pytest.mark.parametrize(
    ("timeout", "retry"), [(0, 1), (-1, 1), (1, -1)], ids=["zero", "negative", "retry"]
)
async def test_nonsensical_timings_are_refused(
    refused_client: Redis, timeout: float, retry: float
) -> None:
    with pytest.raises(ValueError, match="seconds"):
        RedisRateLimiter(refused_client, timeout_seconds=timeout, retry_seconds=retry)
