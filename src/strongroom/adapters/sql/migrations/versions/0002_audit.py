"""Tamper-evident audit trail: records, Merkle nodes, signed checkpoints, prune horizon.

The database itself refuses to change or delete audit rows (triggers), except
deleting records below the prune horizon, which may only advance and never
past the newest signed checkpoint.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_SQLITE_GUARDS = [
    """CREATE TRIGGER audit_records_no_update BEFORE UPDATE ON audit_records
       BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END""",
    """CREATE TRIGGER audit_records_no_delete BEFORE DELETE ON audit_records
       WHEN OLD.seq >= (SELECT horizon FROM audit_prune_horizon WHERE id = 1)
       BEGIN SELECT RAISE(ABORT, 'audit records are pruned only behind a checkpoint'); END""",
    """CREATE TRIGGER audit_nodes_no_update BEFORE UPDATE ON audit_nodes
       BEGIN SELECT RAISE(ABORT, 'audit nodes are append-only'); END""",
    """CREATE TRIGGER audit_nodes_no_delete BEFORE DELETE ON audit_nodes
       BEGIN SELECT RAISE(ABORT, 'audit nodes are append-only'); END""",
    """CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
       BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END""",
    """CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
       BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END""",
    """CREATE TRIGGER audit_horizon_forward_only BEFORE UPDATE ON audit_prune_horizon
       WHEN NEW.horizon < OLD.horizon
         OR NEW.horizon > COALESCE((SELECT max(tree_size) FROM audit_checkpoints), 0)
       BEGIN SELECT RAISE(ABORT, 'the prune horizon only advances, up to a checkpoint'); END""",
    """CREATE TRIGGER audit_horizon_no_delete BEFORE DELETE ON audit_prune_horizon
       BEGIN SELECT RAISE(ABORT, 'the prune horizon cannot be removed'); END""",
]

_POSTGRES_GUARDS = [
    """CREATE FUNCTION strongroom_audit_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN RAISE EXCEPTION 'audit rows are append-only'; END $$""",
    """CREATE FUNCTION strongroom_audit_prune_guard() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF OLD.seq >= (SELECT horizon FROM audit_prune_horizon WHERE id = 1) THEN
           RAISE EXCEPTION 'audit records are pruned only behind a checkpoint';
         END IF;
         RETURN OLD;
       END $$""",
    """CREATE FUNCTION strongroom_audit_horizon_guard() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF NEW.horizon < OLD.horizon OR NEW.horizon >
            COALESCE((SELECT max(tree_size) FROM audit_checkpoints), 0) THEN
           RAISE EXCEPTION 'the prune horizon only advances, up to a checkpoint';
         END IF;
         RETURN NEW;
       END $$""",
    """CREATE TRIGGER audit_records_no_update BEFORE UPDATE ON audit_records
       FOR EACH ROW EXECUTE FUNCTION strongroom_audit_refuse()""",
    """CREATE TRIGGER audit_records_no_delete BEFORE DELETE ON audit_records
       FOR EACH ROW EXECUTE FUNCTION strongroom_audit_prune_guard()""",
    """CREATE TRIGGER audit_nodes_no_change BEFORE UPDATE OR DELETE ON audit_nodes
       FOR EACH ROW EXECUTE FUNCTION strongroom_audit_refuse()""",
    """CREATE TRIGGER audit_checkpoints_no_change BEFORE UPDATE OR DELETE ON audit_checkpoints
       FOR EACH ROW EXECUTE FUNCTION strongroom_audit_refuse()""",
    """CREATE TRIGGER audit_horizon_forward_only BEFORE UPDATE ON audit_prune_horizon
       FOR EACH ROW EXECUTE FUNCTION strongroom_audit_horizon_guard()""",
    """CREATE TRIGGER audit_horizon_no_delete BEFORE DELETE ON audit_prune_horizon
       FOR EACH ROW EXECUTE FUNCTION strongroom_audit_refuse()""",
    "CREATE TRIGGER audit_records_no_truncate BEFORE TRUNCATE ON audit_records "
    "FOR EACH STATEMENT EXECUTE FUNCTION strongroom_audit_refuse()",
]


def upgrade() -> None:
    op.create_table(
        "audit_records",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("time", sa.Float, nullable=False),
        sa.Column("tenant", sa.String(64), nullable=True),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("leaf", sa.LargeBinary(32), nullable=False),
    )
    op.create_index("audit_records_by_tenant", "audit_records", ["tenant", "seq"])
    op.create_index("audit_records_by_action", "audit_records", ["action", "seq"])
    op.create_table(
        "audit_nodes",
        sa.Column("level", sa.Integer, nullable=False),
        sa.Column("idx", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("tree_size", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("root_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("note", sa.Text, nullable=False),
    )
    horizon = op.create_table(
        "audit_prune_horizon",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("horizon", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(horizon, [{"id": 1, "horizon": 0}])
    guards = _POSTGRES_GUARDS if op.get_bind().dialect.name == "postgresql" else _SQLITE_GUARDS
    for statement in guards:
        op.execute(statement)


def downgrade() -> None:
    bind = op.get_bind()
    for table in ("audit_prune_horizon", "audit_checkpoints", "audit_nodes", "audit_records"):
        op.drop_table(table)
    if bind.dialect.name == "postgresql":
        for function in (
            "strongroom_audit_refuse", "strongroom_audit_prune_guard",
            "strongroom_audit_horizon_guard",
        ):  # fmt: skip
            op.execute(f"DROP FUNCTION IF EXISTS {function}()")
