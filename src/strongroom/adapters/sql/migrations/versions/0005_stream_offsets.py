"""Per-topic offset counters for the event log.

Each row holds the next offset of a topic. A gateway locks the rows of the
topics it appends to (``SELECT ... FOR UPDATE``) until its transaction commits,
so several gateways allocate dense, increasing offsets that become visible in
offset order, and an erased tenant's offsets are never handed out again.
Seeded from the records already stored. The SQLite event log uses the same
table (its single writer needs no row locks). Additive only.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stream_offsets",
        sa.Column("topic", sa.String(200), primary_key=True),
        sa.Column("next_offset", sa.BigInteger, nullable=False),
    )
    op.execute(
        'INSERT INTO stream_offsets (topic, next_offset) SELECT topic, max("offset") + 1 '
        "FROM stream_records GROUP BY topic"
    )


def downgrade() -> None:
    op.drop_table("stream_offsets")
