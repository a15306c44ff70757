"""The rate limiter shared through Redis, against the real Redis.

1. Limiters on two connection pools (two gateways) count against one window per
   bucket: together they allow exactly ``burst``, and each reports what the other
   spent in ``remaining``.
2. Concurrent checks from both never let more than ``burst`` through.
3. Decisions carry what the X-RateLimit-* headers report: the limit, what is
   left, and a reset time within the window; ``peek`` spends nothing and
   ``consume`` spends from the same bucket as ``hit``.
4. Buckets are separate, and a bucket spent at one limit does not spend another limit.
5. Every key is under the configured prefix and expires by itself.
6. While Redis answers, nothing goes to the in-process fallback.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis
from shared_ratelimit_support import Counter, RecordingLog

from strongroom.adapters.ratelimit import RedisRateLimiter

#: A slow refill: nothing comes back while a test runs.
RATE = 0.01


@pytest.fixture
def fallbacks() -> Counter:
    return Counter()


@pytest.fixture
def log() -> RecordingLog:
    return RecordingLog()


@pytest.fixture
def gateway_a(
    redis_client: Redis, redis_prefix: str, fallbacks: Counter, log: RecordingLog
) -> RedisRateLimiter:
    return RedisRateLimiter(redis_client, prefix=redis_prefix, on_fallback=fallbacks, log=log)


@pytest.fixture
def gateway_b(
    second_redis_client: Redis, redis_prefix: str, fallbacks: Counter, log: RecordingLog
) -> RedisRateLimiter:
    return RedisRateLimiter(
        second_redis_client, prefix=redis_prefix, on_fallback=fallbacks, log=log
    )


async def test_two_gateways_share_one_window(
    gateway_a: RedisRateLimiter, gateway_b: RedisRateLimiter
) -> None:
    decisions = []
    for turn in range(12):
        limiter = gateway_a if turn % 2 == 0 else gateway_b
        decisions.append(await limiter.hit("key:k1", rate=RATE, burst=10))

    assert [d.allowed for d in decisions] == [True] * 10 + [False] * 2
    assert [d.remaining for d in decisions] == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0, 0]
    assert {d.limit for d in decisions} == {10}


async def test_concurrent_checks_from_two_gateways_never_exceed_the_burst(
    gateway_a: RedisRateLimiter, gateway_b: RedisRateLimiter, fallbacks: Counter
) -> None:
    # Sixteen in flight, as a gateway's busy connections would be: enough to race,
    # not so many that opening connections on a loaded machine passes the timeout.
    in_flight = asyncio.Semaphore(16)

    async def check(n: int) -> bool:
        async with in_flight:
            gateway = gateway_a if n % 2 else gateway_b
            return await gateway.consume("key:busy", rate=RATE, burst=50)

    allowed = await asyncio.gather(*(check(n) for n in range(200)))

    assert fallbacks.count == 0
    assert sum(allowed) == 50


async def test_decisions_carry_what_the_rate_limit_headers_report(
    gateway_a: RedisRateLimiter, gateway_b: RedisRateLimiter
) -> None:
    window = 5  # burst 10 at 2 per second
    before = time.time()
    first = await gateway_a.hit("key:h", rate=2, burst=10)
    peeked = await gateway_b.peek("key:h", rate=2, burst=10)
    again = await gateway_b.peek("key:h", rate=2, burst=10)
    assert await gateway_b.consume("key:h", rate=2, burst=10)
    after_consume = await gateway_a.peek("key:h", rate=2, burst=10)

    assert (first.allowed, first.limit, first.remaining) == (True, 10, 9)
    assert before <= first.reset_at <= time.time() + window
    assert (peeked.allowed, peeked.remaining) == (True, 9)
    assert again.remaining == 9
    assert after_consume.remaining == 8


async def test_a_spent_bucket_refuses_until_told_otherwise_and_others_are_untouched(
    gateway_a: RedisRateLimiter, gateway_b: RedisRateLimiter
) -> None:
    for _ in range(3):
        await gateway_a.hit("ip:203.0.113.7", rate=RATE, burst=3)

    refused = await gateway_b.hit("ip:203.0.113.7", rate=RATE, burst=3)
    peeked = await gateway_b.peek("ip:203.0.113.7", rate=RATE, burst=3)
    other_bucket = await gateway_b.hit("ip:203.0.113.8", rate=RATE, burst=3)
    other_limit = await gateway_b.hit("ip:203.0.113.7", rate=RATE, burst=4)

    assert (refused.allowed, refused.remaining) == (False, 0)
    assert refused.reset_at > time.time()
    assert not peeked.allowed
    assert (other_bucket.allowed, other_bucket.remaining) == (True, 2)
    assert other_limit.allowed


async def test_keys_live_under_the_prefix_and_expire_by_themselves(
    gateway_a: RedisRateLimiter, redis_client: Redis, redis_prefix: str
) -> None:
    await gateway_a.hit("key:k1", rate=2, burst=10)
    await gateway_a.consume("tenant:t1", rate=2, burst=10)

    keys = [key async for key in redis_client.scan_iter(match=redis_prefix + "*")]
    ttls = [await redis_client.pttl(key) for key in keys]

    assert len(keys) == 2
    assert all(key.decode().startswith(redis_prefix + "{") for key in keys)
    assert sorted(b"/key:k1/" in key for key in keys) == [False, True]
    assert sorted(b"/tenant:t1/" in key for key in keys) == [False, True]
    # Twice the 5-second window at most: limits keeps the previous window too.
    assert all(0 < ttl <= 10_000 for ttl in ttls)


async def test_while_redis_answers_nothing_falls_back(
    gateway_a: RedisRateLimiter, fallbacks: Counter, log: RecordingLog
) -> None:
    for _ in range(5):
        await gateway_a.hit("key:k1", rate=RATE, burst=3)
        await gateway_a.consume("tenant:t1", rate=RATE, burst=3)
        await gateway_a.peek("tenant:t1", rate=RATE, burst=3)

    assert gateway_a.shared
    assert fallbacks.count == 0
    assert log.lines == []


async def test_an_empty_prefix_is_refused(redis_client: Redis) -> None:
    with pytest.raises(ValueError, match="prefix"):
        RedisRateLimiter(redis_client, prefix="")
