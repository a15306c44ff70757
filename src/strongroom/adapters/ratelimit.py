"""Rate limits on the ``limits`` library: in memory by default, Redis when shared.

A limit of ``rate`` per second with ``burst`` is enforced as a sliding window of
``burst`` requests per ``burst / rate`` seconds: a client may spend its burst at
once, and over any longer period averages no more than ``rate``.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string

from strongroom.ports import RateDecision, RateLimiter


class LimitsRateLimiter(RateLimiter):
    """``RateLimiter`` backed by a ``limits`` async storage URI (``async+memory://``)."""

    def __init__(
        self, storage_uri: str = "async+memory://", *, namespace: str = "strongroom"
    ) -> None:
        self._limiter = SlidingWindowCounterRateLimiter(storage_from_string(storage_uri))
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
        allowed = await self._limiter.hit(item, bucket)
        return await self._decision(item, bucket, allowed)

    async def peek(self, bucket: str, *, rate: float, burst: int) -> RateDecision:
        item = self._item(rate, burst)
        allowed = await self._limiter.test(item, bucket)
        return await self._decision(item, bucket, allowed)

    async def _decision(self, item: RateLimitItem, bucket: str, allowed: bool) -> RateDecision:
        stats = await self._limiter.get_window_stats(item, bucket)
        reset_at = stats.reset_time if stats.reset_time > 0 else time.time() + item.get_expiry()
        return RateDecision(allowed, item.amount, max(0, stats.remaining), reset_at)
