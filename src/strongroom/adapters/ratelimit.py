"""Rate limits on the ``limits`` library: in memory by default, Redis when shared.

A limit of ``rate`` per second with ``burst`` is enforced as a sliding window of
``burst`` requests per ``burst / rate`` seconds: a client may spend its burst at
once, and over any longer period averages no more than ``rate``.

In memory, the synchronous strategy is used directly: every call is a few
dictionary operations, and wrapping them in coroutines and locks would cost
more than the check itself on the request path.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Final

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import SlidingWindowCounterRateLimiter

from strongroom.ports import RateDecision, RateLimiter


class _SweepingMemoryStorage(MemoryStorage):
    """``limits``' memory storage, sweeping expired counters every second.

    The stock storage restarts a timer thread 10 ms after each use to sweep
    expired counters, which on a busy gateway means starting a thread per
    request. Expiry is also checked on every read, so sweeping less often only
    frees memory later; it never lets a request through that should be refused.
    """

    SWEEP_SECONDS: Final = 1.0

    def _MemoryStorage__schedule_expiry(self) -> None:
        if not self.timer.is_alive():
            sweep = getattr(self, "_MemoryStorage__expire_events")  # noqa: B009 - name-mangled
            self.timer = threading.Timer(self.SWEEP_SECONDS, sweep)
            self.timer.daemon = True
            self.timer.start()


class MemoryRateLimiter(RateLimiter):
    """``RateLimiter`` for one process, on ``limits``' in-memory storage."""

    def __init__(self, *, namespace: str = "strongroom") -> None:
        self._limiter = SlidingWindowCounterRateLimiter(_SweepingMemoryStorage())
        self._namespace = namespace
        self._items: dict[tuple[float, int], RateLimitItem] = {}

    def _item(self, rate: float, burst: int) -> RateLimitItem:
        item = self._items.get((rate, burst))
        if item is None:
            window = max(1, math.ceil(burst / rate))
            item = RateLimitItemPerSecond(burst, window, namespace=self._namespace)
            self._items[(rate, burst)] = item
        return item

    async def hit(self, bucket: str, *, rate: float, burst: int) -> RateDecision:
        item = self._item(rate, burst)
        allowed = self._limiter.hit(item, bucket)
        return self._decision(item, bucket, allowed)

    async def consume(self, bucket: str, *, rate: float, burst: int) -> bool:
        return bool(self._limiter.hit(self._item(rate, burst), bucket))

    async def peek(self, bucket: str, *, rate: float, burst: int) -> RateDecision:
        item = self._item(rate, burst)
        allowed = self._limiter.test(item, bucket)
        return self._decision(item, bucket, allowed)

    def _decision(self, item: RateLimitItem, bucket: str, allowed: bool) -> RateDecision:
        stats = self._limiter.get_window_stats(item, bucket)
        reset_at = stats.reset_time if stats.reset_time > 0 else time.time() + item.get_expiry()
        return RateDecision(allowed, item.amount, max(0, stats.remaining), reset_at)
