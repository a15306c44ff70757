"""Refuse INSERT OR REPLACE on audit tables (SQLite).

SQLite does not fire DELETE triggers for the rows a REPLACE removes unless
recursive triggers are on, so an INSERT OR REPLACE could rewrite an audit row
past the append-only guards of 0002. An insert whose key already exists is
refused instead. (On PostgreSQL, ON CONFLICT DO UPDATE fires the UPDATE guards.)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_GUARDS = {
    "audit_records_no_replace": ("audit_records", "seq = NEW.seq"),
    "audit_nodes_no_replace": ("audit_nodes", "level = NEW.level AND idx = NEW.idx"),
    "audit_checkpoints_no_replace": ("audit_checkpoints", "tree_size = NEW.tree_size"),
    "audit_horizon_no_replace": ("audit_prune_horizon", "id = NEW.id"),
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for trigger, (table, same_key) in _GUARDS.items():
        op.execute(
            f"CREATE TRIGGER {trigger} BEFORE INSERT ON {table} "
            f"WHEN EXISTS (SELECT 1 FROM {table} WHERE {same_key}) "
            "BEGIN SELECT RAISE(ABORT, 'audit rows are append-only'); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for trigger in _GUARDS:
        op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
