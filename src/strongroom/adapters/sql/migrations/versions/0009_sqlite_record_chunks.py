"""The embedded log keeps a request's records in one row: ``stream_chunks``.

On SQLite, ``stream_records`` (a row per record) becomes ``stream_chunks``: a
row holds the consecutive records of one tenant appended together, at most
100 (``adapters.sqlite.chunks`` documents the layout and its rules). Existing
records are moved over, runs of one tenant appended at the same time sharing
a chunk. PostgreSQL keeps ``stream_records``.

Downgrade moves the records back to a row each.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import Connection, text

from strongroom.adapters.sqlite import chunks

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_RECORDS_TABLE = """CREATE TABLE stream_records (
    topic VARCHAR(200) NOT NULL,
    "offset" BIGINT NOT NULL,
    tenant VARCHAR(64) NOT NULL,
    record_id VARCHAR(200) NOT NULL,
    key VARCHAR(200) NOT NULL,
    appended_at FLOAT NOT NULL,
    payload BLOB NOT NULL,
    PRIMARY KEY (topic, "offset")
) WITHOUT ROWID"""
_CHUNKS_TABLE = """CREATE TABLE stream_chunks (
    topic VARCHAR(200) NOT NULL,
    first_offset BIGINT NOT NULL,
    last_offset BIGINT NOT NULL,
    tenant VARCHAR(64) NOT NULL,
    appended_at FLOAT NOT NULL,
    lengths BLOB NOT NULL,
    records BLOB NOT NULL,
    PRIMARY KEY (topic, last_offset)
)"""
_MOVED_AT_A_TIME = 10_000
_CHUNKS_AT_A_TIME = 100
_INSERT_CHUNK = text(
    "INSERT INTO stream_chunks VALUES "
    "(:topic, :first, :last, :tenant, :appended_at, :lengths, :records)"
)
_CHUNK_FIELDS = ("topic", "first", "last", "tenant", "appended_at", "lengths", "records")
# One topic at a time, so that each page is a range of the primary key.
_NEXT_RECORDS = text(
    'SELECT topic, "offset", tenant, record_id, key, appended_at, payload FROM stream_records '
    'WHERE topic = :topic AND "offset" > :offset ORDER BY "offset" LIMIT :limit'
)
_NEXT_CHUNKS = text(
    "SELECT first_offset, last_offset, tenant, appended_at, lengths, records FROM stream_chunks "
    "WHERE topic = :topic AND last_offset > :last ORDER BY last_offset LIMIT :limit"
)
_INSERT_RECORD = text(
    'INSERT INTO stream_records (topic, "offset", tenant, record_id, key, appended_at, payload) '
    "VALUES (:topic, :offset, :tenant, :record_id, :key, :appended_at, :payload)"
)
_Record = tuple[str, int, str, str, str, float, bytes]


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    op.execute(_CHUNKS_TABLE)
    op.execute("CREATE INDEX stream_chunks_by_tenant ON stream_chunks (topic, tenant, last_offset)")
    topics = [row[0] for row in bind.execute(text("SELECT DISTINCT topic FROM stream_records"))]
    for topic in topics:
        run: list[_Record] = []
        after = -1
        while batch := bind.execute(
            _NEXT_RECORDS, {"topic": topic, "offset": after, "limit": _MOVED_AT_A_TIME}
        ).all():
            for row in batch:
                record: _Record = tuple(row)
                if run and not _continues(run[-1], record):
                    _store(bind, run)
                    run = []
                run.append(record)
            after = batch[-1][1]
        if run:
            _store(bind, run)
    op.execute("DROP TABLE stream_records")


def _continues(last: _Record, row: _Record) -> bool:
    """Whether ``row`` may join the chunk that ``last`` ends (chunks rules 1 and 2)."""
    return (last[0], last[1] + 1, last[2], last[5]) == (row[0], row[1], row[2], row[5])


def _store(bind: Connection, run: list[_Record]) -> None:
    topic, first, tenant, _, _, appended_at, _ = run[0]
    records = [(record_id, key, payload) for _, _, _, record_id, key, _, payload in run]
    bind.execute(
        _INSERT_CHUNK,
        [
            dict(zip(_CHUNK_FIELDS, row, strict=True))
            for row in chunks.rows(topic, tenant, first, appended_at, records)
        ],
    )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    op.execute(_RECORDS_TABLE)
    op.execute('CREATE INDEX stream_records_by_tenant ON stream_records (topic, tenant, "offset")')
    topics = [row[0] for row in bind.execute(text("SELECT DISTINCT topic FROM stream_chunks"))]
    for topic in topics:
        after = -1
        while chunk_rows := bind.execute(
            _NEXT_CHUNKS, {"topic": topic, "last": after, "limit": _CHUNKS_AT_A_TIME}
        ).all():
            for first, _last, tenant, appended_at, lengths, records in chunk_rows:
                bind.execute(
                    _INSERT_RECORD,
                    [
                        _record_values(topic, offset, tenant, record, appended_at)
                        for offset, record in enumerate(chunks.decode(lengths, records), first)
                    ],
                )
            after = chunk_rows[-1][1]
    op.execute("DROP TABLE stream_chunks")


def _record_values(
    topic: str, offset: int, tenant: str, record: tuple[str, str, bytes], appended_at: float
) -> dict[str, object]:
    record_id, key, payload = record
    return {
        "topic": topic,
        "offset": offset,
        "tenant": tenant,
        "record_id": record_id,
        "key": key,
        "appended_at": appended_at,
        "payload": payload,
    }
