"""Risk policies (versions and applications) and stored risk decisions.

``risk_policies`` keeps each tenant's policy versions by content hash;
``risk_policy_history`` every application, the newest being the active one;
``risk_decisions`` each decision with its tokenized, hashed inputs, one per
(tenant, transaction id) and per (tenant, Idempotency-Key). Additive only.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "risk_policies",
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("tenant", "version"),
    )
    op.create_table(
        "risk_policy_history",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("applied_at", sa.Float, nullable=False),
    )
    op.create_index("risk_policy_history_by_tenant", "risk_policy_history", ["tenant", "id"])
    op.create_table(
        "risk_decisions",
        sa.Column("trace_id", sa.String(64), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("transaction_id", sa.String(128), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("record", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.UniqueConstraint("tenant", "transaction_id", name="risk_decisions_one_per_transaction"),
        sa.UniqueConstraint("tenant", "idempotency_key", name="risk_decisions_one_per_key"),
    )
    op.create_index("risk_decisions_by_time", "risk_decisions", ["tenant", "created_at"])


def downgrade() -> None:
    op.drop_table("risk_decisions")
    op.drop_index("risk_policy_history_by_tenant", "risk_policy_history")
    op.drop_table("risk_policy_history")
    op.drop_table("risk_policies")
