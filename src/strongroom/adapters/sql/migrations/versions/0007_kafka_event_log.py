"""Bookkeeping of the Kafka event log: the idempotency index and consumer groups.

``kafka_records`` says, for each (topic, tenant, record id) the gateway wrote
to the broker, at which offset the one copy that counts lives (NULL while the
write is in flight); ``kafka_groups``, ``kafka_pending`` and
``kafka_dead_letters`` hold consumer-group positions, unacknowledged
deliveries and dead letters. Used only with ``STRONGROOM_STREAM_URL=kafka://``;
empty otherwise. Additive only.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_TOPIC = 320


def upgrade() -> None:
    op.create_table(
        "kafka_records",
        sa.Column("topic", sa.String(_TOPIC), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("record_id", sa.String(200), nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=True),
        sa.Column("claim", sa.String(32), nullable=False),
        sa.Column("appended_at", sa.Float, nullable=False),
        sa.Column("lands_after", sa.BigInteger, nullable=True),
        sa.PrimaryKeyConstraint("record_id", "tenant", "topic"),
        sqlite_with_rowid=False,
    )
    # Partial, to stay small: committed rows in offset order, and the open claims.
    committed = sa.text('"offset" IS NOT NULL')
    claimed = sa.text('"offset" IS NULL')
    op.create_index(
        "kafka_records_by_offset",
        "kafka_records",
        ["topic", "tenant", "offset"],
        postgresql_where=committed,
        sqlite_where=committed,
    )
    op.create_index(
        "kafka_records_claims",
        "kafka_records",
        ["topic", "tenant"],
        postgresql_where=claimed,
        sqlite_where=claimed,
    )
    op.create_table(
        "kafka_groups",
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("topic", sa.String(_TOPIC), nullable=False),
        sa.Column("group_name", sa.String(64), nullable=False),
        sa.Column("next_offset", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("tenant", "topic", "group_name"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "kafka_pending",
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("topic", sa.String(_TOPIC), nullable=False),
        sa.Column("group_name", sa.String(64), nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
        sa.Column("consumer", sa.String(64), nullable=False),
        sa.Column("deliveries", sa.Integer, nullable=False),
        sa.Column("visible_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("tenant", "topic", "group_name", "offset"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "kafka_dead_letters",
        sa.Column("topic", sa.String(_TOPIC), nullable=False),
        sa.Column("dead_letter_offset", sa.BigInteger, nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("group_name", sa.String(64), nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
        sa.Column("replayed_at", sa.Float, nullable=True),
        sa.PrimaryKeyConstraint("topic", "dead_letter_offset"),
        sqlite_with_rowid=False,
    )
    op.create_index(
        "kafka_dead_letters_by_group", "kafka_dead_letters", ["tenant", "topic", "group_name"]
    )


def downgrade() -> None:
    op.drop_index("kafka_dead_letters_by_group", "kafka_dead_letters")
    op.drop_table("kafka_dead_letters")
    op.drop_table("kafka_pending")
    op.drop_table("kafka_groups")
    op.drop_index("kafka_records_claims", "kafka_records")
    op.drop_index("kafka_records_by_offset", "kafka_records")
    op.drop_table("kafka_records")
