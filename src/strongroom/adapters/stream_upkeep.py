"""Consumer-group statements and safe trimming shared by the logs kept in a database.

The SQLite and PostgreSQL event logs share their consumer-group tables, so the
statements on those are written once, with ``:name`` parameters that both
drivers accept, and each log runs them on its own connection. Statements on
records are each log's own: PostgreSQL keeps a row per record
(``stream_records``), the embedded log runs of records (``adapters.sqlite.chunks``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Final

from strongroom.adapters.dead_letters import dead_letters_from

CREATE_GROUP: Final = (
    "INSERT INTO consumer_groups (tenant, topic, group_name, next_offset, created_at) "
    "VALUES (:tenant, :topic, :group, 0, :now) ON CONFLICT DO NOTHING"
)
MOVE_GROUP: Final = (
    "UPDATE consumer_groups SET next_offset = :offset "
    "WHERE tenant = :tenant AND topic = :topic AND group_name = :group"
)
DROP_PENDING: Final = (
    "DELETE FROM consumer_pending WHERE tenant = :tenant AND topic = :topic AND group_name = :group"
)
#: The two floors below which the tenant's consumer groups have settled
#: everything, as two columns: no group's next offset, no pending record.
SETTLED_FLOOR_COLUMNS: Final = (
    "(SELECT min(next_offset) FROM consumer_groups WHERE tenant = :tenant AND topic = :topic), "
    '(SELECT min("offset") FROM consumer_pending WHERE tenant = :tenant AND topic = :topic)'
)
SETTLED_FLOORS: Final = "SELECT " + SETTLED_FLOOR_COLUMNS


def trim_bound(
    newest_dropped: int | None,
    group_floor: int | None,
    pending_floor: int | None,
    dead_letter_floor: int | None,
) -> int | None:
    """The offset below which a tenant's records may go, or None when none may.

    Records past the kept window go, except from the first one a consumer group
    has not settled: not delivered yet (its group's next offset), pending, or
    dead-lettered and not replayed (a replay must still find it).
    """
    if newest_dropped is None:
        return None
    bound = newest_dropped + 1
    for floor in (group_floor, pending_floor, dead_letter_floor):
        if floor is not None:
            bound = min(bound, floor)
    return bound


def unreplayed_dead_letters(
    rows: Iterable[tuple[int, bytes, float | None]],
) -> tuple[Counter[str], int | None]:
    """From a dead-letter topic's rows: the unreplayed letters per group, and the
    lowest original offset among them (None when every letter was replayed)."""
    waiting: Counter[str] = Counter()
    lowest: int | None = None
    for letter in dead_letters_from(rows, None, None):
        if letter.replayed:
            continue
        waiting[letter.group] += 1
        lowest = letter.offset if lowest is None else min(lowest, letter.offset)
    return waiting, lowest
