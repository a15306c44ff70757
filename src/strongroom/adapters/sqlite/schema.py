"""The embedded store's schema, created or upgraded on open.

Versioned with ``PRAGMA user_version``; each step is additive so the previous
release keeps working against a newer file.
"""

from __future__ import annotations

import sqlite3
from typing import Final

SCHEMA_VERSION: Final = 1

_STEPS: Final[dict[int, str]] = {
    1: """
    CREATE TABLE IF NOT EXISTS stream_records (
        topic TEXT NOT NULL,
        "offset" INTEGER NOT NULL,
        tenant TEXT NOT NULL,
        record_id TEXT NOT NULL,
        key TEXT NOT NULL,
        appended_at REAL NOT NULL,
        payload BLOB NOT NULL,
        PRIMARY KEY (topic, "offset")
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX IF NOT EXISTS stream_records_idempotency
        ON stream_records (tenant, topic, record_id);
    CREATE INDEX IF NOT EXISTS stream_records_by_tenant
        ON stream_records (topic, tenant, "offset");
    CREATE TABLE IF NOT EXISTS consumer_groups (
        tenant TEXT NOT NULL,
        topic TEXT NOT NULL,
        group_name TEXT NOT NULL,
        next_offset INTEGER NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (tenant, topic, group_name)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS consumer_pending (
        tenant TEXT NOT NULL,
        topic TEXT NOT NULL,
        group_name TEXT NOT NULL,
        "offset" INTEGER NOT NULL,
        consumer TEXT NOT NULL,
        deliveries INTEGER NOT NULL,
        visible_at REAL NOT NULL,
        PRIMARY KEY (tenant, topic, group_name, "offset")
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS dead_letter_replays (
        topic TEXT NOT NULL,
        dead_letter_offset INTEGER NOT NULL,
        replayed_at REAL NOT NULL,
        PRIMARY KEY (topic, dead_letter_offset)
    ) WITHOUT ROWID;
    """,
}


def ensure_schema(connection: sqlite3.Connection) -> None:
    """Apply every step newer than the file's version, each in its own transaction."""
    current = connection.execute("PRAGMA user_version").fetchone()[0]
    if current > SCHEMA_VERSION:
        raise RuntimeError(
            f"the data dir holds schema version {current}, newer than this release's "
            f"{SCHEMA_VERSION}; upgrade Strongroom before starting it on this data dir"
        )
    for version in range(current + 1, SCHEMA_VERSION + 1):
        connection.execute("BEGIN IMMEDIATE")
        for statement in _STEPS[version].split(";"):
            if statement.strip():
                connection.execute(statement)
        connection.execute(f"PRAGMA user_version={version}")
        connection.execute("COMMIT")
