"""Card vault: wrapped data keys, card tokens, sealed tenant secrets, tenant settings.

Additive only: a gateway of the previous release keeps running against it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "data_keys",
        sa.Column("dek_id", sa.String(64), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("wrapped", sa.Text, nullable=False),
        sa.Column("kek_version", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reserved", sa.BigInteger, nullable=False),
        sa.Column("max_seals", sa.BigInteger, nullable=False),
    )
    op.create_index("data_keys_by_tenant", "data_keys", ["tenant", "state"])
    op.create_index("data_keys_by_version", "data_keys", ["kek_version", "dek_id"])
    op.create_table(
        "card_tokens",
        sa.Column("token", sa.String(32), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("fingerprint", sa.LargeBinary(32), nullable=False),
        sa.Column("sealed_number", sa.Text, nullable=False),
        sa.Column("dek_id", sa.String(64), nullable=False),
        sa.Column("last4", sa.String(4), nullable=False),
        sa.Column("bin6", sa.String(6), nullable=False),
        sa.Column("brand", sa.String(16), nullable=False),
        sa.Column("exp_month", sa.Integer, nullable=False),
        sa.Column("exp_year", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.UniqueConstraint("tenant", "fingerprint", name="card_tokens_one_per_card"),
    )
    op.create_index("card_tokens_by_dek", "card_tokens", ["dek_id", "token"])
    op.create_table(
        "tenant_secrets",
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("sealed", sa.Text, nullable=False),
        sa.Column("dek_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("tenant", "name"),
    )
    op.create_table(
        "tenant_settings",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("settings", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("tenant_settings")
    op.drop_table("tenant_secrets")
    op.drop_table("card_tokens")
    op.drop_table("data_keys")
