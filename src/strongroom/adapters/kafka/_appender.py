"""Appends to the Kafka event log: claim, produce, commit (the log's rules 1, 2 and 4).

1. Claim: one transaction looks the ids up in the index (committed ones are
   duplicates) and claims the others, so no other gateway produces them
   meanwhile; an id another append holds is waited for.
2. Produce: every record, with the claim in its headers, through the
   idempotent producer; the step ends when the broker acknowledged them all.
3. Commit: one transaction replaces the claims of ALL the call's records, on
   every topic, with their offsets, but only within half the grace period of
   the call's start (checked again just before COMMIT).

A failure in steps 2 or 3 releases the claims and raises ``StorageUnavailable``:
the index then names none of the copies the broker may hold, readers drop
them, and the client's retry produces the records again.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

from strongroom.adapters.kafka._broker import Broker
from strongroom.adapters.kafka._index import Identity, Index
from strongroom.adapters.kafka._records import outgoing
from strongroom.ports import AppendResult, Clock, NewRecord

#: One call's appends: (broker topic, records).
Request = tuple[str, Sequence[NewRecord]]


class Appender:
    """Writes records through the index's claims (see the module steps)."""

    def __init__(
        self, broker: Broker, index: Index, clock: Clock, *, grace: float, claim_wait: float
    ) -> None:
        self._broker = broker
        self._index = index
        self._clock = clock
        self._grace = grace
        self._claim_wait = claim_wait

    def in_time(self, started: float) -> bool:
        """Whether an append started at ``started`` may still commit (rule 4)."""
        return self._clock.now() - started <= self._grace / 2

    async def append(self, requests: Sequence[Request]) -> list[AppendResult]:
        """Append several requests' records as one: all are committed, or none is."""
        started = self._clock.now()
        # An id repeated in an earlier request of the call is a duplicate, as if
        # that request had committed first.
        first: dict[Identity, NewRecord] = {}
        for topic, records in requests:
            for record in records:
                first.setdefault((topic, record.tenant, record.record_id), record)
        if not first:
            return [AppendResult((), ()) for _ in requests]
        claim = new_claim()
        committed = await self.claim(list(first), claim, started)
        to_write = [(identity, record) for identity, record in first.items()
                    if identity not in committed]  # fmt: skip
        if to_write:
            placed = await self.produce(to_write, claim, started)
            try:
                await self._index.settle(
                    claim, placed, appended_at=started, in_time=lambda: self.in_time(started)
                )
            except Exception:
                await self._index.release(claim, [identity for identity, _ in to_write])
                raise
        written = {identity for identity, _ in to_write}
        results = []
        for topic, records in requests:
            accepted: list[str] = []
            duplicates: list[str] = []
            for record in records:
                identity = (topic, record.tenant, record.record_id)
                if identity in written:
                    written.discard(identity)
                    accepted.append(record.record_id)
                else:
                    duplicates.append(record.record_id)
            results.append(AppendResult(tuple(accepted), tuple(duplicates)))
        return results

    async def claim(
        self, identities: Sequence[Identity], claim: str, started: float
    ) -> set[Identity]:
        """Step 1: claim the ids not committed yet; returns the committed ones."""
        topics = sorted({topic for topic, _, _ in identities})
        for topic in topics:
            await self._broker.prepare(topic)
        return await self._index.claim(
            identities,
            claim=claim,
            appended_at=started,
            lands_after={topic: self._broker.known_end(topic) for topic in topics},
            wait=self._claim_wait,
        )

    async def produce(
        self, items: Sequence[tuple[Identity, NewRecord]], claim: str, started: float
    ) -> list[tuple[Identity, int]]:
        """Step 2: produce claimed records; returns each one's offset. On failure the
        claims are released before ``StorageUnavailable`` propagates."""
        by_topic: dict[str, list[tuple[Identity, NewRecord]]] = {}
        for identity, record in items:
            by_topic.setdefault(identity[0], []).append((identity, record))
        outcomes = await asyncio.gather(
            *(
                self._broker.produce(
                    topic, [outgoing(record, claim, started) for _, record in entries]
                )
                for topic, entries in by_topic.items()
            ),
            return_exceptions=True,
        )
        placed: list[tuple[Identity, int]] = []
        for entries, outcome in zip(by_topic.values(), outcomes, strict=True):
            if isinstance(outcome, BaseException):
                await self._index.release(claim, [identity for identity, _ in items])
                raise outcome
            placed.extend(
                (identity, offset) for (identity, _), offset in zip(entries, outcome, strict=True)
            )
        return placed

    async def release(self, claim: str, identities: Sequence[Identity]) -> None:
        await self._index.release(claim, identities)


def new_claim() -> str:
    """A fresh claim token (32 hex digits)."""
    return uuid.uuid4().hex
