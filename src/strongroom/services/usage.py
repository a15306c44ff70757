"""Per-tenant usage: counted in memory on the hot path, written in batches.

Rules:
1. Recording a use is a dictionary update: no I/O on the request path.
2. ``flush`` adds the accumulated counts to the store in one statement; if the
   store fails, the counts are kept and added to the next flush (nothing lost,
   nothing counted twice).
3. Counts are by UTC day.
"""

from __future__ import annotations

import time
from collections import defaultdict
from enum import StrEnum
from functools import lru_cache

from strongroom.ports import Clock, UsageRepository, UsageRow


class Operation(StrEnum):
    EVENTS_INGESTED = "events_ingested"
    EVALUATIONS = "evaluations"
    TOKENIZATIONS = "tokenizations"
    DETOKENIZATIONS = "detokenizations"
    WEBHOOK_DELIVERIES = "webhook_deliveries"


SECONDS_PER_DAY = 86_400


def utc_day(at: float) -> str:
    """``at`` (POSIX seconds) as its UTC date, ``YYYY-MM-DD``."""
    # POSIX time has no leap seconds, so UTC days are whole multiples of 86,400 s;
    # the label of the day is formatted once, not on every request.
    return _day_label(int(at // SECONDS_PER_DAY))


@lru_cache(maxsize=8)
def _day_label(day: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(day * SECONDS_PER_DAY))


class UsageRecorder:
    def __init__(self, repository: UsageRepository, clock: Clock) -> None:
        self._repository = repository
        self._clock = clock
        self._pending: defaultdict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])

    def record(self, tenant_id: str, operation: Operation, count: int = 1, size: int = 0) -> None:
        totals = self._pending[(tenant_id, utc_day(self._clock.now()), operation.value)]
        totals[0] += count
        totals[1] += size

    def discard(self, tenant_id: str) -> None:
        """Drop counts not yet flushed for an erased tenant."""
        for key in [k for k in self._pending if k[0] == tenant_id]:
            del self._pending[key]

    async def flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, defaultdict(lambda: [0, 0])
        rows = [UsageRow(t, d, o, c, b) for (t, d, o), (c, b) in pending.items()]
        try:
            await self._repository.add(rows)
        except Exception:
            for row in rows:
                totals = self._pending[(row.tenant_id, row.day, row.operation)]
                totals[0] += row.count
                totals[1] += row.bytes
            raise

    async def query(self, tenant_id: str, first_day: str, last_day: str) -> list[UsageRow]:
        """Stored totals plus what is still in memory, so a read sees its own writes."""
        await self.flush()
        return await self._repository.query(tenant_id, first_day, last_day)
