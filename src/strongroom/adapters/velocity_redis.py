"""Velocity counters and the seen-card register in Redis, shared by every gateway.

Layout, per velocity key:

- ``{prefix}<key>:t``, a sorted set: member = event id, score = time in
  milliseconds. ``ZADD NX`` makes an event count once however often it is
  observed, and keeps its first timestamp.
- ``{prefix}<key>:a``, a hash: event id → amount in minor units.

All the queries of one call run in one Lua script, one command and one round
trip, atomic in Redis. For each key it drops events older than the query's
retention, adds the event, caps the key at ``max_events_per_key`` (oldest
dropped first), keeps the expiry at least as long as the retention, and
totals each window.

Redis Cluster: the keys of one call must share a slot, so put a hash tag in
the prefix (``{strongroom}:velocity:``); on a single Redis nothing is needed.
Amount sums are exact up to 2**53 minor units (Lua numbers are doubles).
Redis errors become ``StorageUnavailable`` here and never escape raw.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final

from redis.asyncio import Redis
from redis.exceptions import RedisError

from strongroom.errors import StorageUnavailable
from strongroom.services.velocity import (
    DEFAULT_MAX_EVENTS_PER_KEY,
    DEFAULT_SEEN_CARD_SECONDS,
    SeenCards,
    VelocityCounter,
    VelocityQuery,
    VelocityTotals,
)

DEFAULT_PREFIX: Final = "strongroom:velocity:"
DEFAULT_SEEN_PREFIX: Final = "strongroom:seen:"

_LUA_HELPERS: Final = """
local function chunks(ids, fn)
  for i = 1, #ids, 1000 do
    fn(unpack(ids, i, math.min(i + 999, #ids)))
  end
end
local function sum_of(h, ids)
  local total = 0
  chunks(ids, function(...)
    for _, v in ipairs(redis.call('HMGET', h, ...)) do
      if v then total = total + tonumber(v) end
    end
  end)
  return total
end
-- Totals of each window: count, and the amount sum when asked (else 0).
local function totals(z, h, now, sums, windows, extra_count, extra_amount)
  local out = {}
  for _, window in ipairs(windows) do
    local from = '(' .. (now - window)
    if sums then
      local ids = redis.call('ZRANGEBYSCORE', z, from, '+inf')
      out[#out + 1] = #ids + extra_count
      out[#out + 1] = sum_of(h, ids) + extra_amount
    else
      out[#out + 1] = redis.call('ZCOUNT', z, from, '+inf') + extra_count
      out[#out + 1] = 0
    end
  end
  return out
end
-- ARGV after the fixed head: per query, its fields then its windows.
local function queries(first, fields)
  local list, i = {}, first
  while i <= #ARGV do
    local q = {}
    for f = 1, fields do q[f] = tonumber(ARGV[i + f - 1]) end
    i = i + fields
    q.windows = {}
    for w = 1, q[fields] do q.windows[w] = tonumber(ARGV[i + w - 1]) end
    i = i + q[fields]
    list[#list + 1] = q
  end
  return list
end
"""

# ARGV: event id, amount, now (ms), cap; then per query: retention (ms), ttl (s),
# sums (0/1), number of windows, and the windows (ms).
_OBSERVE: Final = (
    _LUA_HELPERS
    + """
local id, amount, now, cap = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {}
for n, q in ipairs(queries(5, 4)) do
  local z, h = KEYS[2 * n - 1], KEYS[2 * n]
  local retention, ttl, sums = q[1], q[2], q[3] == 1
  local expired = redis.call('ZRANGEBYSCORE', z, '-inf', now - retention)
  if #expired > 0 then
    redis.call('ZREMRANGEBYSCORE', z, '-inf', now - retention)
    chunks(expired, function(...) redis.call('HDEL', h, ...) end)
  end
  if redis.call('ZADD', z, 'NX', now, id) == 1 then
    redis.call('HSET', h, id, amount)
    local extra = redis.call('ZCARD', z) - cap
    if extra > 0 then
      local oldest = redis.call('ZRANGE', z, 0, extra - 1)
      redis.call('ZREMRANGEBYRANK', z, 0, extra - 1)
      chunks(oldest, function(...) redis.call('HDEL', h, ...) end)
    end
  end
  if redis.call('TTL', z) < ttl then
    redis.call('EXPIRE', z, ttl)
    redis.call('EXPIRE', h, ttl)
  end
  out[n] = totals(z, h, now, sums, q.windows, 0, 0)
end
return out
"""
)

# ARGV: event id, amount, now (ms); then per query: sums (0/1), number of
# windows, and the windows (ms).
_PEEK: Final = (
    _LUA_HELPERS
    + """
local id, amount, now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
for n, q in ipairs(queries(4, 2)) do
  local z, h = KEYS[2 * n - 1], KEYS[2 * n]
  local extra_count, extra_amount = 1, amount
  if redis.call('ZSCORE', z, id) then
    extra_count, extra_amount = 0, 0
  end
  out[n] = totals(z, h, now, q[1] == 1, q.windows, extra_count, extra_amount)
end
return out
"""
)

_FIRST_SEEN: Final = """
local first = redis.call('GET', KEYS[1])
if not first then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  return 1
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
if first == ARGV[1] then return 1 end
return 0
"""


def _millis(seconds: float) -> int:
    return round(seconds * 1000)


def _unavailable(exc: RedisError) -> StorageUnavailable:
    return StorageUnavailable(f"The velocity store (Redis) is unavailable: {type(exc).__name__}.")


class RedisVelocityCounter(VelocityCounter):
    """``VelocityCounter`` shared through Redis; handed a ready ``redis.asyncio`` client.

    The client is the caller's: ``aclose`` leaves it open.
    """

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        max_events_per_key: int = DEFAULT_MAX_EVENTS_PER_KEY,
    ) -> None:
        if max_events_per_key < 1:
            raise ValueError("max_events_per_key must be at least 1")
        self._client = client
        self._prefix = prefix
        self._cap = max_events_per_key
        self._observe = client.register_script(_OBSERVE)
        self._peek = client.register_script(_PEEK)

    def keys_of(self, key: str) -> tuple[str, str]:
        """The Redis keys (times, amounts) that hold a velocity key."""
        base = self._prefix + key
        return base + ":t", base + ":a"

    def _keys(self, queries: Sequence[VelocityQuery]) -> list[str]:
        return [name for query in queries for name in self.keys_of(query.key)]

    async def observe_many(
        self, event_id: str, amount: int, now: float, queries: Sequence[VelocityQuery]
    ) -> list[tuple[VelocityTotals, ...]]:
        if not queries:
            return []
        args: list[Any] = [event_id, amount, _millis(now), self._cap]
        for query in queries:
            retention = query.retention
            args += [retention * 1000, math.ceil(retention) + 1, int(query.sums)]
            args += [len(query.windows), *(window * 1000 for window in query.windows)]
        return self._parse(queries, await self._run(self._observe, self._keys(queries), args))

    async def peek_many(
        self, event_id: str, amount: int, now: float, queries: Sequence[VelocityQuery]
    ) -> list[tuple[VelocityTotals, ...]]:
        if not queries:
            return []
        args: list[Any] = [event_id, amount, _millis(now)]
        for query in queries:
            args += [int(query.sums), len(query.windows)]
            args += [window * 1000 for window in query.windows]
        return self._parse(queries, await self._run(self._peek, self._keys(queries), args))

    @staticmethod
    async def _run(script: Any, keys: list[str], args: list[Any]) -> list[Any]:
        try:
            return list(await script(keys=keys, args=args))
        except RedisError as exc:
            raise _unavailable(exc) from exc

    @staticmethod
    def _parse(
        queries: Sequence[VelocityQuery], replies: Sequence[Any]
    ) -> list[tuple[VelocityTotals, ...]]:
        results = []
        for query, reply in zip(queries, replies, strict=True):
            values = [int(value) for value in reply]
            results.append(
                tuple(
                    VelocityTotals(values[2 * i], values[2 * i + 1] if query.sums else None)
                    for i in range(len(query.windows))
                )
            )
        return results


class RedisSeenCards(SeenCards):
    """``SeenCards`` shared through Redis: one key per card holding the first
    event id, expiring after ``retention`` seconds without a sighting.
    """

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = DEFAULT_SEEN_PREFIX,
        retention: float = DEFAULT_SEEN_CARD_SECONDS,
    ) -> None:
        if retention <= 0:
            raise ValueError("retention must be positive")
        self._client = client
        self._prefix = prefix
        self._ttl = math.ceil(retention)
        self._first_seen = client.register_script(_FIRST_SEEN)

    async def first_seen(self, key: str, event_id: str, now: float) -> bool:
        try:
            answer = await self._first_seen(keys=[self._prefix + key], args=[event_id, self._ttl])
        except RedisError as exc:
            raise _unavailable(exc) from exc
        return int(answer) == 1

    async def peek(self, key: str, event_id: str, now: float) -> bool:
        try:
            first = await self._client.get(self._prefix + key)
        except RedisError as exc:
            raise _unavailable(exc) from exc
        if first is None:
            return True
        if isinstance(first, bytes):
            first = first.decode()
        return bool(first == event_id)
