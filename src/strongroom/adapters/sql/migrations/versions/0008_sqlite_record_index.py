"""The embedded log finds stored record ids through its own index, not SQLite's.

On SQLite, ``stream_records`` loses its unique index on (tenant, topic,
record_id): random event ids made every append rewrite one B-tree page per
event, and the log's idempotency now comes from ``RecordIndex`` (a
log-structured index beside the database file, derived from this table).
PostgreSQL keeps the constraint, which its appends rely on.

SQLite cannot drop a table constraint, so the table is rebuilt with the same
rows. Downgrade restores the constraint (and fails if the table holds a
duplicate, which the index never lets in).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_COLUMNS = """
    topic VARCHAR(200) NOT NULL,
    "offset" BIGINT NOT NULL,
    tenant VARCHAR(64) NOT NULL,
    record_id VARCHAR(200) NOT NULL,
    key VARCHAR(200) NOT NULL,
    appended_at FLOAT NOT NULL,
    payload BLOB NOT NULL,
    PRIMARY KEY (topic, "offset")"""
_UNIQUE = ",\n    CONSTRAINT stream_records_idempotency UNIQUE (tenant, topic, record_id)"


def _rebuild(constraint: str) -> None:
    op.execute(f"CREATE TABLE stream_records_rebuilt ({_COLUMNS}{constraint}\n) WITHOUT ROWID")
    op.execute("INSERT INTO stream_records_rebuilt SELECT " + _NAMES + " FROM stream_records")
    op.execute("DROP TABLE stream_records")
    op.execute("ALTER TABLE stream_records_rebuilt RENAME TO stream_records")
    op.execute('CREATE INDEX stream_records_by_tenant ON stream_records (topic, tenant, "offset")')


_NAMES = 'topic, "offset", tenant, record_id, key, appended_at, payload'


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild("")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild(_UNIQUE)
