"""The dead-letter record every event log writes to ``<topic>.dlq``, and how it is read.

One format for every engine, so a dead letter looks the same whichever log
holds it: a JSON envelope naming the original record, the group that gave up
on it, how often it was delivered and when.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from strongroom.ports import DeadLetter, NewRecord, StoredRecord


def dead_letter_record(record: StoredRecord, group: str, deliveries: int, now: float) -> NewRecord:
    """The record to append to the dead-letter topic of ``record.topic``."""
    envelope = {
        "topic": record.topic,
        "offset": record.offset,
        "group": group,
        "deliveries": deliveries,
        "dead_at": now,
        "record_id": record.record_id,
    }
    return NewRecord(
        tenant=record.tenant,
        record_id=f"{group}:{record.offset}:{deliveries}:{now}",
        key=record.key,
        payload=json.dumps(envelope, separators=(",", ":")).encode(),
    )


def dead_letters_from(
    rows: Iterable[tuple[int, bytes, float | None]], group: str | None, limit: int | None
) -> list[DeadLetter]:
    """Dead letters from (dead-letter offset, payload, replayed_at) rows in offset order,
    only ``group``'s when given, at most ``limit``."""
    letters: list[DeadLetter] = []
    for offset, payload, replayed_at in rows:
        envelope = json.loads(payload)
        if group is not None and envelope["group"] != group:
            continue
        letters.append(
            DeadLetter(
                dead_letter_offset=int(offset),
                topic=envelope["topic"],
                group=envelope["group"],
                offset=envelope["offset"],
                deliveries=envelope["deliveries"],
                dead_at=envelope["dead_at"],
                replayed=replayed_at is not None,
            )
        )
        if limit is not None and len(letters) >= limit:
            break
    return letters
