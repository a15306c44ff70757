"""The tables of the Kafka event log's bookkeeping, on the gateway's own database.

The records live on the broker; these tables say which of them count
(``kafka_records``, the idempotency index) and where each consumer group
stands (``kafka_groups``, ``kafka_pending``, ``kafka_dead_letters``). Topics
are named as on the broker (the deployment's ``stream_prefix`` included), since
offsets belong to a broker topic. Created by migration 0007.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
)

from strongroom.adapters.sql.tables import metadata

#: Long enough for a 100-character prefix, a 200-character topic and ``.dlq``.
TOPIC_LENGTH = 320

#: One row per (topic, tenant, record id) the gateway produced or is producing.
#: ``offset`` is NULL while the record is claimed (produced, not yet
#: acknowledged by the broker); ``claim`` names the append that wrote the row
#: and is carried in the record's headers; ``lands_after`` is an offset known to
#: exist before the claim, so the claimed record can only land after it.
#: The primary key leads with the record id: appends and readers look rows up
#: by lists of ids, which PostgreSQL matches in the index only on a leading
#: column (on a later one it reads the tenant's whole topic and filters).
kafka_records = Table(
    "kafka_records",
    metadata,
    Column("topic", String(TOPIC_LENGTH), nullable=False),
    Column("tenant", String(64), nullable=False),
    Column("record_id", String(200), nullable=False),
    Column("offset", BigInteger, nullable=True),
    Column("claim", String(32), nullable=False),
    Column("appended_at", Float, nullable=False),
    Column("lands_after", BigInteger, nullable=True),
    PrimaryKeyConstraint("record_id", "tenant", "topic"),
    sqlite_with_rowid=False,
)
# Partial indexes: committed rows in offset order (listings, lag, offset_at),
# and the few open claims (what readers must not step over).
_committed = kafka_records.c.offset.is_not(None)
_claimed = kafka_records.c.offset.is_(None)
Index(
    "kafka_records_by_offset",
    kafka_records.c.topic,
    kafka_records.c.tenant,
    kafka_records.c.offset,
    postgresql_where=_committed,
    sqlite_where=_committed,
)
Index(
    "kafka_records_claims",
    kafka_records.c.topic,
    kafka_records.c.tenant,
    postgresql_where=_claimed,
    sqlite_where=_claimed,
)

kafka_groups = Table(
    "kafka_groups",
    metadata,
    Column("tenant", String(64), nullable=False),
    Column("topic", String(TOPIC_LENGTH), nullable=False),
    Column("group_name", String(64), nullable=False),
    Column("next_offset", BigInteger, nullable=False),
    Column("created_at", Float, nullable=False),
    PrimaryKeyConstraint("tenant", "topic", "group_name"),
    sqlite_with_rowid=False,
)

kafka_pending = Table(
    "kafka_pending",
    metadata,
    Column("tenant", String(64), nullable=False),
    Column("topic", String(TOPIC_LENGTH), nullable=False),
    Column("group_name", String(64), nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("consumer", String(64), nullable=False),
    Column("deliveries", Integer, nullable=False),
    Column("visible_at", Float, nullable=False),
    PrimaryKeyConstraint("tenant", "topic", "group_name", "offset"),
    sqlite_with_rowid=False,
)

#: Each dead letter of a group: ``topic`` is the original record's topic and
#: ``dead_letter_offset`` the letter's offset in ``<topic>.dlq``.
kafka_dead_letters = Table(
    "kafka_dead_letters",
    metadata,
    Column("topic", String(TOPIC_LENGTH), nullable=False),
    Column("dead_letter_offset", BigInteger, nullable=False),
    Column("tenant", String(64), nullable=False),
    Column("group_name", String(64), nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("replayed_at", Float, nullable=True),
    PrimaryKeyConstraint("topic", "dead_letter_offset"),
    Index("kafka_dead_letters_by_group", "tenant", "topic", "group_name"),
    sqlite_with_rowid=False,
)
