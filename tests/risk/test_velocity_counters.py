"""The velocity counter and seen-card contract, on every backend (ids ``memory``, ``redis``)."""

from __future__ import annotations

import gc

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from risk_support import T0

from strongroom.adapters.velocity_redis import RedisSeenCards, RedisVelocityCounter
from strongroom.errors import StorageUnavailable
from strongroom.services.velocity import (
    MemorySeenCards,
    MemoryVelocityCounter,
    SeenCards,
    VelocityCounter,
    VelocityQuery,
    VelocityTotals,
)


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def counter(backend: str, request: pytest.FixtureRequest, redis_prefix: str) -> VelocityCounter:
    if backend == "memory":
        return MemoryVelocityCounter(max_events_per_key=5)
    client: Redis = request.getfixturevalue("redis_client")
    return RedisVelocityCounter(client, prefix=redis_prefix, max_events_per_key=5)


@pytest.fixture
def seen(backend: str, request: pytest.FixtureRequest, redis_prefix: str) -> SeenCards:
    if backend == "memory":
        return MemorySeenCards(retention=1000)
    client: Redis = request.getfixturevalue("redis_client")
    return RedisSeenCards(client, prefix=redis_prefix + "seen:", retention=1000)


def totals(*pairs: tuple[int, int | None]) -> tuple[VelocityTotals, ...]:
    return tuple(VelocityTotals(count, amount) for count, amount in pairs)


async def test_windows_slide(counter: VelocityCounter) -> None:
    assert await counter.observe("k", "e1", 100, T0, [60, 600]) == totals((1, 100), (1, 100))
    assert await counter.observe("k", "e2", 50, T0 + 30, [60, 600]) == totals((2, 150), (2, 150))
    # e1 is 60 s old: out of the 60 s window (its lower end is open), still in the 600 s one.
    assert await counter.observe("k", "e3", 7, T0 + 60, [60, 600]) == totals((2, 57), (3, 157))
    assert await counter.observe("k", "e4", 1, T0 + 700, [60, 600]) == totals((1, 1), (1, 1))
    assert await counter.observe("other", "e4", 1, T0 + 700, [60]) == totals((1, 1))


async def test_an_event_counts_once(counter: VelocityCounter) -> None:
    await counter.observe("k", "e1", 100, T0, [600])
    assert await counter.observe("k", "e1", 100, T0 + 1, [600]) == totals((1, 100))
    assert await counter.observe("k", "e1", 999, T0 + 2, [600]) == totals((1, 100))
    # It keeps its first time: 600 s after it, it has left the window.
    assert await counter.observe("k", "e2", 5, T0 + 600, [600]) == totals((1, 5))


async def test_peek_records_nothing(counter: VelocityCounter) -> None:
    await counter.observe("k", "e1", 100, T0, [600])
    assert await counter.peek("k", "e2", 10, T0 + 1, [600]) == totals((2, 110))
    assert await counter.peek("k", "e2", 10, T0 + 1, [600]) == totals((2, 110))
    # An event already recorded is not added twice.
    assert await counter.peek("k", "e1", 100, T0 + 1, [600]) == totals((1, 100))
    assert await counter.peek("empty", "e9", 3, T0, [600]) == totals((1, 3))
    assert await counter.observe("k", "e3", 1, T0 + 2, [600]) == totals((2, 101))


async def test_many_queries_and_sums_only_when_asked(counter: VelocityCounter) -> None:
    queries = [VelocityQuery("a", (60, 3600)), VelocityQuery("b", (60,), sums=True)]
    assert await counter.observe_many("e1", 40, T0, queries) == [
        totals((1, None), (1, None)),
        totals((1, 40)),
    ]
    assert await counter.peek_many("e2", 2, T0, queries) == [
        totals((2, None), (2, None)),
        totals((2, 42)),
    ]
    assert await counter.observe_many("e1", 40, T0, []) == []


async def test_late_events_keep_order(counter: VelocityCounter) -> None:
    await counter.observe("k", "e2", 2, T0 + 50, [100])
    assert await counter.observe("k", "e1", 1, T0 + 10, [100]) == totals((2, 3))
    assert await counter.observe("k", "e3", 4, T0 + 111, [100]) == totals((2, 6))


async def test_a_key_is_capped(counter: VelocityCounter) -> None:
    for n in range(8):
        got = await counter.observe("k", f"e{n}", 1, T0 + n, [600])
    assert got == totals((5, 5))


async def test_seen_cards(seen: SeenCards) -> None:
    assert await seen.peek("card", "t1", T0)
    assert await seen.first_seen("card", "t1", T0)
    assert await seen.first_seen("card", "t1", T0 + 1)
    assert not await seen.first_seen("card", "t2", T0 + 2)
    assert not await seen.peek("card", "t3", T0 + 3)
    assert await seen.peek("card", "t1", T0 + 3)
    assert await seen.first_seen("other", "t2", T0 + 3)


async def test_memory_seen_cards_forget_after_retention() -> None:
    seen = MemorySeenCards(max_cards=2, retention=100)
    assert await seen.first_seen("a", "t1", T0)
    assert not await seen.first_seen("a", "t2", T0 + 50)
    # Unseen for longer than the retention: new again, and t3 is now its first.
    assert await seen.first_seen("a", "t3", T0 + 151)
    await seen.first_seen("b", "t4", T0 + 151)
    await seen.first_seen("c", "t5", T0 + 151)
    assert len(seen) == 2
    assert await seen.peek("a", "t9", T0 + 152)


async def test_memory_counter_memory_is_bounded() -> None:
    counter = MemoryVelocityCounter(max_keys=100, max_events=250, max_events_per_key=10)
    for n in range(5_000):
        await counter.observe(f"key{n % 700}", f"e{n}", 1, T0 + n / 100, [3600])
        keys, events = counter.size
        assert keys <= 100
        assert events <= 250
    # The most recently used keys survive; old ones were dropped.
    assert await counter.peek("key99", "new", 1, T0 + 50, [3600]) != totals((1, 1))
    assert await counter.peek("key650", "new", 1, T0 + 50, [3600]) == totals((1, 1))


async def test_memory_counter_drops_expired_events() -> None:
    counter = MemoryVelocityCounter()
    for n in range(100):
        await counter.observe("k", f"e{n}", 1, T0 + n, [10])
    assert counter.size == (1, 10)


def test_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        MemoryVelocityCounter(max_keys=0)
    with pytest.raises(ValueError, match="at least 1"):
        MemorySeenCards(max_cards=0)


async def test_redis_keys_expire_with_the_longest_retention(
    redis_client: Redis, redis_prefix: str
) -> None:
    counter = RedisVelocityCounter(redis_client, prefix=redis_prefix)
    await counter.observe_many(
        "e1",
        5,
        T0,
        [VelocityQuery("t1:card:abc", (60, 600)), VelocityQuery("t1:ip:x", (), retain=900)],
    )
    times, amounts = counter.keys_of("t1:card:abc")
    assert times == redis_prefix + "t1:card:abc:t"
    assert 600 <= await redis_client.ttl(times) <= 601
    assert 600 <= await redis_client.ttl(amounts) <= 601
    assert 900 <= await redis_client.ttl(counter.keys_of("t1:ip:x")[0]) <= 901


async def test_redis_errors_become_storage_unavailable() -> None:
    # Nothing listens on port 1; no retries, so the failure is immediate.
    client = Redis(
        host="127.0.0.1", port=1, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    try:
        counter = RedisVelocityCounter(client)
        with pytest.raises(StorageUnavailable, match="Redis"):
            await counter.observe("k", "e", 1, T0, [60])
        with pytest.raises(StorageUnavailable):
            await counter.observe_many(
                "e", 1, T0, [VelocityQuery("a", (60,)), VelocityQuery("b", (60,))]
            )
        seen = RedisSeenCards(client)
        with pytest.raises(StorageUnavailable):
            await seen.first_seen("k", "e", T0)
        with pytest.raises(StorageUnavailable):
            await seen.peek("k", "e", T0)
    finally:
        await client.aclose()


async def test_memory_seen_cards_keep_recently_seen_cards_within_the_bound() -> None:
    seen = MemorySeenCards(max_cards=4, retention=1_000)
    await seen.first_seen("a", "ta", T0)
    await seen.first_seen("b", "tb", T0)
    await seen.first_seen("c", "tc", T0)
    # Seen again: "a" is kept over "b", which nobody showed since.
    assert await seen.first_seen("a", "ta", T0 + 1)
    for n, card in enumerate("defgh"):
        await seen.first_seen(card, f"t{card}", T0 + 2 + n)
        assert len(seen) <= 4
    assert not await seen.peek("h", "other", T0 + 10)
    assert await seen.peek("b", "other", T0 + 10)


async def test_memory_seen_cards_bound_of_one() -> None:
    seen = MemorySeenCards(max_cards=1, retention=1_000)
    for card in "abc":
        assert await seen.first_seen(card, "t-" + card, T0)
        assert len(seen) == 1
    assert not await seen.peek("c", "other", T0)


async def test_memory_seen_cards_give_the_cycle_collector_nothing_to_walk() -> None:
    seen = MemorySeenCards(max_cards=100_000)
    cards = [f"card-{n}" for n in range(10_000)]
    for n, card in enumerate(cards):
        await seen.first_seen(card, f"event-{n}", T0 + n)
    gc.collect()
    # The collector sees only tracked containers: a register kept in one (an
    # OrderedDict, say) is walked card by card on every full collection.
    assert [holder for holder in gc.get_referrers(cards[-1]) if isinstance(holder, dict)] == []
    assert await seen.peek(cards[-1], "event-9999", T0 + 10_000)
    assert not await seen.peek(cards[-1], "another", T0 + 10_000)
