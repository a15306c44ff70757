"""Every table Strongroom keeps, defined once for SQLite and PostgreSQL.

The schema is created and changed only by Alembic migrations
(``migrations/versions``); this module is what the repositories query.
Times are seconds since the epoch as floats, the same on both databases.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# PostgreSQL only since migration 0009: the embedded log keeps its records in
# runs (adapters.sqlite.chunks), in a table its migrations create.
stream_records = Table(
    "stream_records",
    metadata,
    Column("topic", String(200), nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("tenant", String(64), nullable=False),
    Column("record_id", String(200), nullable=False),
    Column("key", String(200), nullable=False),
    Column("appended_at", Float, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    PrimaryKeyConstraint("topic", "offset"),
    # The embedded log kept this index beside the database file instead from
    # migration 0008 (adapters.sqlite.record_index).
    UniqueConstraint("tenant", "topic", "record_id", name="stream_records_idempotency"),
    Index("stream_records_by_tenant", "topic", "tenant", "offset"),
    sqlite_with_rowid=False,
)

consumer_groups = Table(
    "consumer_groups",
    metadata,
    Column("tenant", String(64), nullable=False),
    Column("topic", String(200), nullable=False),
    Column("group_name", String(64), nullable=False),
    Column("next_offset", BigInteger, nullable=False),
    Column("created_at", Float, nullable=False),
    PrimaryKeyConstraint("tenant", "topic", "group_name"),
    sqlite_with_rowid=False,
)

consumer_pending = Table(
    "consumer_pending",
    metadata,
    Column("tenant", String(64), nullable=False),
    Column("topic", String(200), nullable=False),
    Column("group_name", String(64), nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("consumer", String(64), nullable=False),
    Column("deliveries", Integer, nullable=False),
    Column("visible_at", Float, nullable=False),
    PrimaryKeyConstraint("tenant", "topic", "group_name", "offset"),
    sqlite_with_rowid=False,
)

dead_letter_replays = Table(
    "dead_letter_replays",
    metadata,
    Column("topic", String(200), nullable=False),
    Column("dead_letter_offset", BigInteger, nullable=False),
    Column("replayed_at", Float, nullable=False),
    PrimaryKeyConstraint("topic", "dead_letter_offset"),
    sqlite_with_rowid=False,
)

tenants = Table(
    "tenants",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("status", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False, index=True),
    Column("name", String(128), nullable=False),
    Column("role", String(16), nullable=False),
    Column("scopes", Text, nullable=True),
    Column("platform", Boolean, nullable=False, default=False),
    Column("mode", String(8), nullable=False),
    Column("secret_hash", LargeBinary(32), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("created_by", String(64), nullable=True),
    Column("expires_at", Float, nullable=True),
    Column("last_used_at", Float, nullable=True),
    Column("revoked_at", Float, nullable=True),
    Column("replaced_by", String(32), nullable=True),
    Column("rate_limit_rps", Float, nullable=True),
    Column("rate_limit_burst", Integer, nullable=True),
)

usage_daily = Table(
    "usage_daily",
    metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("day", String(10), nullable=False),
    Column("operation", String(32), nullable=False),
    Column("count", BigInteger, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    PrimaryKeyConstraint("tenant_id", "day", "operation"),
)

audit_records = Table(
    "audit_records",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("time", Float, nullable=False),
    Column("tenant", String(64), nullable=True),
    Column("actor", String(64), nullable=False),
    Column("action", String(64), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("leaf", LargeBinary(32), nullable=False),
    Index("audit_records_by_tenant", "tenant", "seq"),
    Index("audit_records_by_action", "action", "seq"),
)

audit_nodes = Table(
    "audit_nodes",
    metadata,
    Column("level", Integer, nullable=False),
    Column("idx", BigInteger, nullable=False),
    Column("hash", LargeBinary(32), nullable=False),
    PrimaryKeyConstraint("level", "idx"),
    sqlite_with_rowid=False,
)

audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("tree_size", BigInteger, primary_key=True, autoincrement=False),
    Column("root_hash", LargeBinary(32), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("note", Text, nullable=False),
)

audit_prune_horizon = Table(
    "audit_prune_horizon",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("horizon", BigInteger, nullable=False),
)

data_keys = Table(
    "data_keys",
    metadata,
    Column("dek_id", String(64), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("wrapped", Text, nullable=False),
    Column("kek_version", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("state", String(16), nullable=False),
    Column("reserved", BigInteger, nullable=False),
    Column("max_seals", BigInteger, nullable=False),
    Index("data_keys_by_tenant", "tenant", "state"),
    Index("data_keys_by_version", "kek_version", "dek_id"),
)

card_tokens = Table(
    "card_tokens",
    metadata,
    Column("token", String(32), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("fingerprint", LargeBinary(32), nullable=False),
    Column("sealed_number", Text, nullable=False),
    Column("dek_id", String(64), nullable=False),
    Column("last4", String(4), nullable=False),
    Column("bin6", String(6), nullable=False),
    Column("brand", String(16), nullable=False),
    Column("exp_month", Integer, nullable=False),
    Column("exp_year", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("tenant", "fingerprint", name="card_tokens_one_per_card"),
    Index("card_tokens_by_dek", "dek_id", "token"),
)

tenant_secrets = Table(
    "tenant_secrets",
    metadata,
    Column("tenant", String(64), nullable=False),
    Column("name", String(64), nullable=False),
    Column("sealed", Text, nullable=False),
    Column("dek_id", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    PrimaryKeyConstraint("tenant", "name"),
)

tenant_settings = Table(
    "tenant_settings",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("settings", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
)

stream_offsets = Table(
    "stream_offsets",
    metadata,
    Column("topic", String(200), primary_key=True),
    Column("next_offset", BigInteger, nullable=False),
)

risk_policies = Table(
    "risk_policies",
    metadata,
    Column("tenant", String(64), nullable=False),
    Column("version", String(32), nullable=False),
    Column("text", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    PrimaryKeyConstraint("tenant", "version"),
)

risk_policy_history = Table(
    "risk_policy_history",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("version", String(32), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("applied_at", Float, nullable=False),
    Index("risk_policy_history_by_tenant", "tenant", "id"),
)

risk_decisions = Table(
    "risk_decisions",
    metadata,
    Column("trace_id", String(64), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("transaction_id", String(128), nullable=False),
    Column("idempotency_key", String(255), nullable=True),
    Column("record", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("tenant", "transaction_id", name="risk_decisions_one_per_transaction"),
    UniqueConstraint("tenant", "idempotency_key", name="risk_decisions_one_per_key"),
    Index("risk_decisions_by_time", "tenant", "created_at"),
)
