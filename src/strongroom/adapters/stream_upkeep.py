"""Replay, consumer-group states and safe trimming for the logs kept in a database.

The SQLite and PostgreSQL event logs share their consumer-group tables, so the
statements on those are written once, with ``:name`` parameters that both
drivers accept, and each log runs them on its own connection. The statements
on ``stream_records`` (a row per record) are PostgreSQL's: the embedded log
keeps runs of records instead (``adapters.sqlite.chunks``) and reads them
its own way.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Final

from strongroom.adapters.dead_letters import dead_letters_from

OFFSET_AT: Final = (
    'SELECT min("offset") FROM stream_records '
    "WHERE topic = :topic AND tenant = :tenant AND appended_at >= :at"
)
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
GROUP_STATES: Final = (
    "SELECT g.topic, g.tenant, g.group_name, "
    "(SELECT count(*) FROM stream_records r WHERE r.topic = g.topic AND r.tenant = g.tenant "
    'AND r."offset" >= g.next_offset), '
    "(SELECT count(*) FROM consumer_pending p WHERE p.tenant = g.tenant AND p.topic = g.topic "
    "AND p.group_name = g.group_name) "
    "FROM consumer_groups g ORDER BY g.topic, g.tenant, g.group_name"
)
DEAD_LETTER_ROWS: Final = (
    'SELECT r."offset", r.payload, p.replayed_at FROM stream_records r '
    "LEFT JOIN dead_letter_replays p ON p.topic = r.topic "
    'AND p.dead_letter_offset = r."offset" '
    'WHERE r.topic = :topic AND r.tenant = :tenant ORDER BY r."offset"'
)
TRIM_TENANTS: Final = "SELECT DISTINCT tenant FROM stream_records WHERE topic = :topic"
#: The two floors below which the tenant's consumer groups have settled
#: everything: no group's next offset, no pending record.
_SETTLED_FLOORS: Final = (
    "(SELECT min(next_offset) FROM consumer_groups WHERE tenant = :tenant AND topic = :topic), "
    '(SELECT min("offset") FROM consumer_pending WHERE tenant = :tenant AND topic = :topic)'
)
SETTLED_FLOORS: Final = "SELECT " + _SETTLED_FLOORS
#: The newest record that falls outside the kept ones, and the settled floors.
TRIM_FLOORS: Final = (
    "SELECT "
    '(SELECT "offset" FROM stream_records WHERE topic = :topic AND tenant = :tenant '
    'ORDER BY "offset" DESC LIMIT 1 OFFSET :keep), ' + _SETTLED_FLOORS
)
DROP_REPLAY_MARKS_BELOW: Final = (
    "DELETE FROM dead_letter_replays WHERE topic = :topic AND dead_letter_offset IN "
    '(SELECT "offset" FROM stream_records WHERE topic = :topic AND tenant = :tenant '
    'AND "offset" < :below)'
)
DROP_RECORDS_BELOW: Final = (
    'DELETE FROM stream_records WHERE topic = :topic AND tenant = :tenant AND "offset" < :below'
)


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
