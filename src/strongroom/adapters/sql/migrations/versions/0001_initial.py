"""Event log, consumer groups, tenants, API keys and usage.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stream_records",
        sa.Column("topic", sa.String(200), nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("record_id", sa.String(200), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("appended_at", sa.Float, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("topic", "offset"),
        sa.UniqueConstraint("tenant", "topic", "record_id", name="stream_records_idempotency"),
        sqlite_with_rowid=False,
    )
    op.create_index("stream_records_by_tenant", "stream_records", ["topic", "tenant", "offset"])
    op.create_table(
        "consumer_groups",
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("topic", sa.String(200), nullable=False),
        sa.Column("group_name", sa.String(64), nullable=False),
        sa.Column("next_offset", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("tenant", "topic", "group_name"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "consumer_pending",
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("topic", sa.String(200), nullable=False),
        sa.Column("group_name", sa.String(64), nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
        sa.Column("consumer", sa.String(64), nullable=False),
        sa.Column("deliveries", sa.Integer, nullable=False),
        sa.Column("visible_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("tenant", "topic", "group_name", "offset"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "dead_letter_replays",
        sa.Column("topic", sa.String(200), nullable=False),
        sa.Column("dead_letter_offset", sa.BigInteger, nullable=False),
        sa.Column("replayed_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("topic", "dead_letter_offset"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("scopes", sa.Text, nullable=True),
        sa.Column("platform", sa.Boolean, nullable=False),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("secret_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("created_by", sa.String(64), nullable=True),
        sa.Column("expires_at", sa.Float, nullable=True),
        sa.Column("last_used_at", sa.Float, nullable=True),
        sa.Column("revoked_at", sa.Float, nullable=True),
        sa.Column("replaced_by", sa.String(32), nullable=True),
        sa.Column("rate_limit_rps", sa.Float, nullable=True),
        sa.Column("rate_limit_burst", sa.Integer, nullable=True),
    )
    op.create_index("ix_api_keys_tenant_id", "api_keys", ["tenant_id"])
    op.create_table(
        "usage_daily",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("operation", sa.String(32), nullable=False),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "day", "operation"),
    )


def downgrade() -> None:
    for table in (
        "usage_daily", "api_keys", "tenants", "dead_letter_replays",
        "consumer_pending", "consumer_groups", "stream_records",
    ):  # fmt: skip
        op.drop_table(table)
