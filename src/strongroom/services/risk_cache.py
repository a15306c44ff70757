"""Recent decisions in memory, in front of a decision store.

A retried evaluation (the same Idempotency-Key or transaction id) usually
comes back within seconds, to the gateway that answered it. Keeping the
newest decisions in process answers such a replay without reading the store,
and ``GET /v1/decisions/{trace_id}`` right after an evaluation too.

Rules:

1. The store stays the truth: the cache only ever holds records the store
   returned or committed, and a miss always asks the store, so a decision
   made before a restart or by another gateway is still found.
2. The cache is bounded by count (least recently stored first out) and by
   age: an entry older than ``max_age_seconds`` counts as absent. The age
   bound is far below the shortest decision retention, so a pruned decision
   is never answered from here.
3. ``erase_tenant`` drops the tenant's entries before erasing its stored
   decisions; ``prune`` needs nothing here (rule 2).
4. When an Idempotency-Key is given, only a cached decision with that key
   answers for it; any other case the cache cannot settle goes to the store.
5. Entries are the decisions' stored JSON, not their objects: a record is a
   few dozen objects the garbage collector would walk on every full pass, and
   a cache that keeps taking in records makes those passes frequent. A hit
   pays for parsing, but hits are retries, and retries are rare.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Final

import orjson

from strongroom.domain.risk import DecisionRecord
from strongroom.ports import EventLog, NewRecord
from strongroom.services.risk_stores import DecisionJournal

DEFAULT_CACHED_DECISIONS: Final = 4096
#: Client retries come back within seconds or minutes; this is far below any retention.
DEFAULT_CACHE_SECONDS: Final = 600.0


class CachedDecisionStore(DecisionJournal):
    """``store`` behind a cache of recent decisions (module rules)."""

    def __init__(
        self,
        store: DecisionJournal,
        *,
        max_records: int = DEFAULT_CACHED_DECISIONS,
        max_age_seconds: float = DEFAULT_CACHE_SECONDS,
        on_close: Callable[[], Awaitable[None]] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_records < 1:
            raise ValueError("max_records must be at least 1")
        if max_age_seconds <= 0:
            raise ValueError("max_age_seconds must be positive")
        self.store = store
        self._max = max_records
        self._max_age = max_age_seconds
        self._on_close = on_close
        self._monotonic = monotonic
        #: (tenant, trace id) -> (stored JSON, transaction id, Idempotency-Key, cached at)
        self._records: OrderedDict[tuple[str, str], tuple[bytes, str, str | None, float]] = (
            OrderedDict()
        )
        self._by_transaction: dict[tuple[str, str], str] = {}
        self._by_key: dict[tuple[str, str], str] = {}

    def __len__(self) -> int:
        return len(self._records)

    def _remember(self, record: DecisionRecord, document: bytes | None = None) -> DecisionRecord:
        tenant, trace_id = record.tenant, record.trace_id
        document = document or orjson.dumps(record.to_storage())
        entry = (document, record.transaction_id, record.idempotency_key, self._monotonic())
        self._records[(tenant, trace_id)] = entry
        self._records.move_to_end((tenant, trace_id))
        self._by_transaction[(tenant, record.transaction_id)] = trace_id
        if record.idempotency_key is not None:
            self._by_key[(tenant, record.idempotency_key)] = trace_id
        while len(self._records) > self._max:
            (old_tenant, old_trace), (_, transaction_id, key, _) = self._records.popitem(last=False)
            self._unindex(old_tenant, old_trace, transaction_id, key)
        return record

    def _unindex(self, tenant: str, trace_id: str, transaction_id: str, key: str | None) -> None:
        if self._by_transaction.get((tenant, transaction_id)) == trace_id:
            del self._by_transaction[(tenant, transaction_id)]
        if key is not None and self._by_key.get((tenant, key)) == trace_id:
            del self._by_key[(tenant, key)]

    def _cached(self, tenant: str, trace_id: str | None) -> DecisionRecord | None:
        if trace_id is None:
            return None
        found = self._records.get((tenant, trace_id))
        if found is None:
            return None
        document, transaction_id, key, cached_at = found
        if self._monotonic() - cached_at > self._max_age:
            del self._records[(tenant, trace_id)]
            self._unindex(tenant, trace_id, transaction_id, key)
            return None
        return DecisionRecord.from_storage(orjson.loads(document))

    def publishes_to(self, log: EventLog | None) -> bool:
        return self.store.publishes_to(log)

    async def put(self, record: DecisionRecord) -> DecisionRecord:
        return self._remember(await self.store.put(record))

    async def put_published(
        self,
        record: DecisionRecord,
        topic: str,
        published: NewRecord,
        *,
        document: bytes | None = None,
    ) -> DecisionRecord:
        # One JSON document for the store's row and this cache's entry.
        document = document or orjson.dumps(record.to_storage())
        stored = await self.store.put_published(record, topic, published, document=document)
        return self._remember(stored, document if stored is record else None)

    async def get(self, tenant: str, trace_id: str) -> DecisionRecord | None:
        cached = self._cached(tenant, trace_id)
        if cached is not None:
            return cached
        found = await self.store.get(tenant, trace_id)
        return None if found is None else self._remember(found)

    async def find(
        self, tenant: str, *, transaction_id: str, idempotency_key: str | None
    ) -> DecisionRecord | None:
        if idempotency_key is not None:
            cached = self._cached(tenant, self._by_key.get((tenant, idempotency_key)))
        else:
            cached = self._cached(tenant, self._by_transaction.get((tenant, transaction_id)))
        if cached is not None:
            return cached
        found = await self.store.find(
            tenant, transaction_id=transaction_id, idempotency_key=idempotency_key
        )
        return None if found is None else self._remember(found)

    async def prune(self, before: float) -> int:
        return await self.store.prune(before)

    async def erase_tenant(self, tenant: str) -> int:
        for entry in [entry for entry in self._records if entry[0] == tenant]:
            _, transaction_id, key, _ = self._records.pop(entry)
            self._unindex(tenant, entry[1], transaction_id, key)
        return await self.store.erase_tenant(tenant)

    async def aclose(self) -> None:
        try:
            if self._on_close is not None:
                await self._on_close()
        finally:
            await self.store.aclose()
