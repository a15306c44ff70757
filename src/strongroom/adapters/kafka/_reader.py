"""Which records on the broker count, for ``read`` and consumer groups (the log's rules 3-5).

A record counts only at the offset the index names for its (topic, tenant,
id). A record still claimed by its append (produced, not committed) is
undecided: readers stop before it until it is committed, or until it is older
than the grace period and so can never be.

The index is asked first, in one statement: the tenant's committed offsets
after ``after`` and, for each open claim, an offset its record lands after.
Below the lowest such offset the listing is complete and is fetched by
offset; from there the partition is scanned and each of the tenant's records
decided one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from strongroom.adapters.kafka._broker import Broker
from strongroom.adapters.kafka._index import Index
from strongroom.adapters.kafka._records import Found, parse
from strongroom.ports import Clock, StoredRecord

#: Records fetched per step of a scan.
SCAN_BATCH: Final = 500


class Reader:
    """Reads a tenant's records that count (see the module docstring)."""

    def __init__(self, broker: Broker, index: Index, clock: Clock, *, grace: float) -> None:
        self._broker = broker
        self._index = index
        self._clock = clock
        self._grace = grace

    async def deliverable(
        self, broker_topic: str, topic: str, tenant: str, after: int, limit: int
    ) -> tuple[list[StoredRecord], int]:
        """Up to ``limit`` records of ``tenant`` after ``after`` that count, in offset order,
        and the offset before which everything is decided (where a group may move on)."""
        listing = await self._index.listing(broker_topic, tenant, after, limit)
        barrier: int | None = None
        if listing.claims_land_after:
            barrier = max(after, min(listing.claims_land_after)) + 1
        listed = [entry for entry in listing.committed if barrier is None or entry[0] < barrier]
        records = await self._fetch_listed(broker_topic, topic, tenant, listed)
        position = listed[-1][0] + 1 if listed else after + 1
        if barrier is None or len(listed) >= limit:
            return records, position
        more, position = await self._scan(
            broker_topic, topic, tenant, max(barrier, position), limit - len(records)
        )
        return records + more, position

    async def _fetch_listed(
        self, broker_topic: str, topic: str, tenant: str, listed: Sequence[tuple[int, str, str]]
    ) -> list[StoredRecord]:
        if not listed:
            return []
        fetched = await self._broker.fetch(broker_topic, [entry[0] for entry in listed])
        records = []
        for offset, record_id, claim in listed:
            found = fetched.get(offset)
            parsed = None if found is None else parse(found)
            # A record missing (deleted by the broker's retention) or not the one
            # the index names (the topic was recreated) is not served.
            if parsed is not None and (parsed.tenant, parsed.record_id, parsed.claim) == (
                tenant, record_id, claim,
            ):  # fmt: skip
                records.append(parsed.stored(topic))
        return records

    async def _scan(
        self, broker_topic: str, topic: str, tenant: str, start: int, want: int
    ) -> tuple[list[StoredRecord], int]:
        """Decide record by record from ``start``: stop before the first undecided record
        of ``tenant``, after ``want`` records, or at the end."""
        position = start
        records: list[StoredRecord] = []
        while len(records) < want:
            batch, at_end = await self._broker.scan(broker_topic, position, SCAN_BATCH)
            parsed = [(fetched.offset, parse(fetched)) for fetched in batch]
            mine = [found for _, found in parsed if found is not None and found.tenant == tenant]
            rows = await self._index.rows(
                (broker_topic, tenant, found.record_id) for found in mine
            ) if mine else {}  # fmt: skip
            alive_since = self._clock.now() - self._grace
            for offset, found in parsed:
                if found is not None and found.tenant == tenant:
                    row = rows.get((broker_topic, tenant, found.record_id))
                    if row is not None and row.offset == offset:
                        records.append(found.stored(topic))
                    elif (
                        row is not None
                        and row.offset is None
                        and row.claim == found.claim
                        and found.appended_at > alive_since
                    ):
                        return records, offset
                position = offset + 1
                if len(records) >= want:
                    return records, position
            if at_end or not batch:
                break
        return records, position

    async def records_at(
        self, broker_topic: str, topic: str, tenant: str, offsets: Sequence[int]
    ) -> dict[int, StoredRecord]:
        """The tenant's records that count at these offsets."""
        if not offsets:
            return {}
        fetched = await self._broker.fetch(broker_topic, offsets)
        found: list[Found] = [
            parsed
            for parsed in map(parse, fetched.values())
            if parsed is not None and parsed.tenant == tenant
        ]
        rows = await self._index.rows((broker_topic, tenant, item.record_id) for item in found)
        return {
            item.offset: item.stored(topic)
            for item in found
            if (row := rows.get((broker_topic, tenant, item.record_id))) is not None
            and row.offset == item.offset
        }
