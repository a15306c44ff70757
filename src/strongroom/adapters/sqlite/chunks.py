"""How the embedded log keeps records: a run of them per row, not one per row.

A batch of 100 events stored as 100 rows cost SQLite 100 B-tree inserts into
the table and 100 into its by-tenant index, which was most of the writer's
time and a sixth of the gateway's CPU per batch. A row of ``stream_chunks``
holds consecutive records appended together instead: one insert per request
or fewer.

Rules every function here relies on and every writer keeps:

1. **Contiguous.** A chunk holds every offset from ``first_offset`` to
   ``last_offset``, in order: appends give it consecutive offsets, and a
   deletion removes whole chunks or cuts a chunk's oldest records off (which
   raises ``first_offset``). Chunks of a topic never overlap.
2. **One tenant, one time.** A chunk's records belong to one tenant and were
   appended at one time, so erasing a tenant deletes whole chunks and each
   record's ``appended_at`` is its chunk's. Appends gathered into one commit
   share its time, so concurrent requests of one tenant share chunks.
3. **Bounded.** At most ``RECORDS_PER_CHUNK`` records, so reading one record
   decodes at most that many.

A chunk's ``lengths`` are the byte lengths of each record's id, key and payload
(little-endian 32-bit, three per record); ``records`` are those bytes, in that
order, one record after another.
"""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

from strongroom.ports import StoredRecord

#: Records in one chunk at most: one request's batch.
RECORDS_PER_CHUNK: Final = 100
_LENGTH_BYTES: Final = 4
#: SQLite's largest integer: no offset lies beyond it.
_LARGEST_OFFSET: Final = 2**63 - 1

#: (topic, first_offset, last_offset, tenant, appended_at, lengths, records)
ChunkRow = tuple[str, int, int, str, float, bytes, bytes]

INSERT: Final = "INSERT INTO stream_chunks VALUES (?, ?, ?, ?, ?, ?, ?)"
_COLUMNS: Final = "first_offset, last_offset, tenant, appended_at, lengths, records"


def encode(records: Sequence[tuple[str, str, bytes]]) -> tuple[bytes, bytes]:
    """``lengths`` and ``records`` of a chunk of (record id, key, payload)."""
    lengths: list[int] = []
    parts: list[bytes] = []
    try:
        for record_id, key, payload in records:
            record_id_bytes = record_id.encode()
            key_bytes = key.encode()
            lengths += (len(record_id_bytes), len(key_bytes), len(payload))
            parts += (record_id_bytes, key_bytes, payload)
        return struct.pack(f"<{len(lengths)}I", *lengths), b"".join(parts)
    except (AttributeError, TypeError) as exc:
        # What a NULL or mistyped column is to the database: the append fails
        # as a storage error, and its transaction (or savepoint) rolls back.
        raise sqlite3.DataError("a record's id, key or payload is not text or bytes") from exc


def decode(lengths: bytes, records: bytes) -> list[tuple[str, str, bytes]]:
    """The (record id, key, payload) of each record of a chunk, in offset order."""
    sizes = struct.unpack(f"<{len(lengths) // _LENGTH_BYTES}I", lengths)
    decoded = []
    position = 0
    for index in range(0, len(sizes), 3):
        id_end = position + sizes[index]
        key_end = id_end + sizes[index + 1]
        payload_end = key_end + sizes[index + 2]
        decoded.append(
            (
                records[position:id_end].decode(),
                records[id_end:key_end].decode(),
                records[key_end:payload_end],
            )
        )
        position = payload_end
    return decoded


def record_ids(lengths: bytes, records: bytes) -> list[str]:
    """The id of each record of a chunk, in offset order, without copying payloads."""
    sizes = struct.unpack(f"<{len(lengths) // _LENGTH_BYTES}I", lengths)
    ids = []
    position = 0
    for index in range(0, len(sizes), 3):
        id_end = position + sizes[index]
        ids.append(records[position:id_end].decode())
        position = id_end + sizes[index + 1] + sizes[index + 2]
    return ids


@dataclass(slots=True)
class Run:
    """Records of one tenant and time being gathered into a chunk from ``first``."""

    topic: str
    tenant: str
    appended_at: float
    first: int
    records: list[tuple[str, str, bytes]] = field(default_factory=list)

    def takes(self, tenant: str, appended_at: float) -> bool:
        """Whether the next record, of ``tenant`` at ``appended_at``, may join (rules 2, 3)."""
        return (
            tenant == self.tenant
            and appended_at == self.appended_at
            and len(self.records) < RECORDS_PER_CHUNK
        )

    def row(self) -> ChunkRow:
        lengths, body = encode(self.records)
        last = self.first + len(self.records) - 1
        return (self.topic, self.first, last, self.tenant, self.appended_at, lengths, body)


def rows(
    topic: str,
    tenant: str,
    first_offset: int,
    appended_at: float,
    records: Sequence[tuple[str, str, bytes]],
) -> list[ChunkRow]:
    """The chunk rows of ``records`` stored from ``first_offset``."""
    return [
        Run(
            topic, tenant, appended_at, first_offset + at, [*records[at : at + RECORDS_PER_CHUNK]]
        ).row()
        for at in range(0, len(records), RECORDS_PER_CHUNK)
    ]


def _stored(
    topic: str, first: int, tenant: str, appended_at: float, lengths: bytes, records: bytes
) -> Iterator[StoredRecord]:
    for offset, (record_id, key, payload) in enumerate(decode(lengths, records), first):
        yield StoredRecord(topic, offset, tenant, record_id, key, appended_at, payload)


def read(
    connection: sqlite3.Connection, topic: str, tenant: str, start: int, limit: int | None
) -> list[StoredRecord]:
    """The tenant's records of ``topic`` from offset ``start`` on, at most ``limit``."""
    found: list[StoredRecord] = []
    if (limit is not None and limit <= 0) or start > _LARGEST_OFFSET:
        return found
    cursor = connection.execute(
        f"SELECT {_COLUMNS} FROM stream_chunks WHERE topic = ? AND tenant = ? "
        "AND last_offset >= ? ORDER BY last_offset",
        (topic, tenant, start),
    )
    for first, _, owner, appended_at, lengths, records in cursor:
        for record in _stored(topic, first, owner, appended_at, lengths, records):
            if record.offset < start:
                continue
            found.append(record)
            if len(found) == limit:
                cursor.close()
                return found
    return found


def record_at(
    connection: sqlite3.Connection, topic: str, tenant: str, offset: int
) -> StoredRecord | None:
    """The tenant's record at ``offset`` of ``topic``, if the log holds it."""
    found = read_chunk(connection, topic, offset)
    if found is None or found[2] != tenant:
        return None
    first, _, owner, appended_at, lengths, records = found
    record_id, key, payload = decode(lengths, records)[offset - first]
    return StoredRecord(topic, offset, owner, record_id, key, appended_at, payload)


def read_chunk(
    connection: sqlite3.Connection, topic: str, offset: int
) -> tuple[int, int, str, float, bytes, bytes] | None:
    """The chunk of ``topic`` that holds ``offset``: its columns after ``topic``."""
    row = connection.execute(
        f"SELECT {_COLUMNS} FROM stream_chunks WHERE topic = ? AND last_offset >= ? "
        "ORDER BY last_offset LIMIT 1",
        (topic, offset),
    ).fetchone()
    if row is None or row[0] > offset:
        return None
    found: tuple[int, int, str, float, bytes, bytes] = row
    return found


def ids_at(
    connection: sqlite3.Connection, topic: str, tenant: str, offsets: Sequence[int]
) -> set[tuple[int, str]]:
    """(offset, record id) of the tenant's records at ``offsets`` that the log holds."""
    found: set[tuple[int, str]] = set()
    covered_to = -1
    ids: list[str] = []
    first = 0
    for offset in sorted(offsets):
        if offset > covered_to:
            chunk = read_chunk(connection, topic, offset)
            if chunk is None or chunk[2] != tenant:
                continue
            first, covered_to = chunk[0], chunk[1]
            ids = record_ids(chunk[4], chunk[5])
        found.add((offset, ids[offset - first]))
    return found


def topic_ids(
    connection: sqlite3.Connection, topic: str, start: int, stop: int
) -> Iterator[tuple[str, str, int]]:
    """(tenant, record id, offset) of every record of ``topic`` from ``start`` to
    below ``stop``, in offset order."""
    cursor = connection.execute(
        "SELECT first_offset, tenant, lengths, records FROM stream_chunks "
        "WHERE topic = ? AND last_offset >= ? ORDER BY last_offset",
        (topic, start),
    )
    for first, tenant, lengths, records in cursor:
        if first >= stop:
            cursor.close()
            return
        for offset, record_id in enumerate(record_ids(lengths, records), first):
            if start <= offset < stop:
                yield tenant, record_id, offset
