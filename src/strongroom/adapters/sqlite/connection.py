"""The settings every connection to a Strongroom SQLite file gets.

The event log's writer and readers open the file with ``sqlite3``; the
relational store's engine opens it through aiosqlite. Both apply the same
pragmas here, so a setting that matters for durability or erasure cannot be
on for one and off for the other.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

#: How long any connection waits for another's lock before giving up.
BUSY_TIMEOUT_MS: Final = 10_000
#: Values bound in one ``IN (...)`` list at most: under SQLite's limit on host
#: parameters (999 in builds before 3.32), with room for the other terms.
SQL_VARIABLES_PER_QUERY: Final = 500
_WAL_RETRY_SECONDS: Final = 0.01


def apply_pragmas(execute: Callable[[str], object]) -> None:
    """Apply the shared pragmas through ``execute`` (one SQL statement a call).

    Switching a new file to WAL needs a moment of exclusive access, and SQLite
    answers "database is locked" at once, without its busy handler, when
    another connection is opening the same file (gateways or CLI commands
    started together). The switch is retried for up to the busy timeout; a
    file already in WAL mode never retries.
    """
    execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(_WAL_RETRY_SECONDS)
    # FULL makes each WAL commit durable against power loss, not only process crashes.
    execute("PRAGMA synchronous=FULL")
    execute("PRAGMA foreign_keys=ON")
    # Deleted rows are overwritten, not left in free pages: erasing a tenant
    # destroys its records and wrapped data keys on disk too (crypto-shredding).
    execute("PRAGMA secure_delete=ON")


def connect(path: Path) -> sqlite3.Connection:
    """A ``sqlite3`` connection with the shared pragmas, usable from any thread."""
    connection = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
    )
    apply_pragmas(connection.execute)
    # Chosen when a unique index on random event ids scattered each commit's
    # writes over many pages (that index has since left SQLite, and records are
    # stored in runs); not measured again since. (Rarer WAL checkpoints were
    # tried: they saved little and made each checkpoint a long stall in the p99.)
    connection.execute("PRAGMA cache_size=-65536")
    return connection
