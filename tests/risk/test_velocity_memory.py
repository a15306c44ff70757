"""The in-process velocity counter against a plain model, and what it costs the
cycle collector."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from types import ModuleType

from hypothesis import given, settings
from hypothesis import strategies as st
from risk_support import T0

from strongroom.services.velocity import MemoryVelocityCounter, VelocityQuery, VelocityTotals

WINDOWS = (10, 100)
#: The largest amount an int64 holds: a few of them overflow any 64-bit sum.
HUGE = (1 << 63) - 1

events = st.lists(
    st.tuples(
        st.sampled_from(["a", "b"]),
        st.integers(0, 40).map(lambda n: f"e{n}"),
        st.one_of(st.integers(0, 1000), st.just(HUGE), st.integers(0, HUGE)),
        st.floats(0, 150, allow_nan=False),
    ),
    max_size=60,
)


def model_totals(
    seen: list[tuple[str, str, int, float]], key: str, now: float
) -> tuple[VelocityTotals, ...]:
    mine = [(amount, at) for k, _, amount, at in seen if k == key]
    return tuple(
        VelocityTotals(
            sum(1 for _, at in mine if at > now - window),
            sum(amount for amount, at in mine if at > now - window),
        )
        for window in WINDOWS
    )


@settings(max_examples=300, deadline=None)
@given(events)
def test_totals_match_a_plain_sum_of_the_events_in_each_window(
    stream: list[tuple[str, str, int, float]],
) -> None:
    """Exact amounts beyond 64 bits, late events, replays and compaction included."""
    counter = MemoryVelocityCounter(max_events_per_key=1000)
    seen: list[tuple[str, str, int, float]] = []
    clock = T0
    for key, event_id, amount, offset in stream:
        # Mostly forward in time, some events late by up to 150 s.
        clock += 1
        at = clock - offset if offset > 140 else clock
        query = [VelocityQuery(key, WINDOWS, sums=True)]
        (got,) = asyncio.run(counter.observe_many(event_id, amount, at, query))
        # The counter first forgets the key's events past the longest window
        # (a forgotten id counts again), then records the event unless it holds it.
        seen = [s for s in seen if s[0] != key or s[3] > at - max(WINDOWS)]
        if not any(k == key and e == event_id for k, e, _, _ in seen):
            seen.append((key, event_id, amount, at))
        assert got == model_totals(seen, key, at)


def tracked_objects_reachable_from(root: object) -> Iterator[object]:
    """Every object the cycle collector tracks that ``root`` reaches, ``root`` included."""
    stack, visited = [root], {id(root)}
    while stack:
        item = stack.pop()
        yield item
        for child in gc.get_referents(item):
            # Classes and modules are the program, not the counter's state.
            if isinstance(child, type | ModuleType):
                continue
            if gc.is_tracked(child) and id(child) not in visited:
                visited.add(id(child))
                stack.append(child)


async def test_a_full_counter_gives_the_cycle_collector_nothing_to_walk() -> None:
    """A full collection visits every reference of every tracked object; a counter
    holding thousands of events must not add a reference per event (each one
    lengthens the pauses that stop the event loop)."""
    counter = MemoryVelocityCounter()
    query = [VelocityQuery(key, WINDOWS, sums=True) for key in ("card", "merchant", "device")]
    for n in range(5_000):
        await counter.observe_many(f"evt-{n}", 100 + n, T0 + n / 100, query)

    walked = sum(len(gc.get_referents(o)) for o in tracked_objects_reachable_from(counter))

    assert counter.size == (3, 15_000)
    assert walked < 100, f"{walked} references for the collector to visit"


async def test_totals_stay_exact_across_compactions_and_late_events() -> None:
    counter = MemoryVelocityCounter()
    seen: list[tuple[str, str, int, float]] = []
    for n in range(600):
        # Every tenth event arrives 30 s late; old events keep being dropped, so
        # the arrays are compacted several times along the way.
        at = T0 + n - (30 if n % 10 == 9 else 0)
        amount = HUGE if n % 97 == 0 else n
        (got,) = await counter.observe_many(
            f"e{n}", amount, at, [VelocityQuery("k", WINDOWS, sums=True)]
        )
        seen = [s for s in seen if s[3] > at - max(WINDOWS)]
        seen.append(("k", f"e{n}", amount, at))
        assert got == model_totals(seen, "k", at)
