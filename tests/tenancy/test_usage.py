"""Per-tenant usage over ``GET /v1/usage`` (scope ``usage:read``).

1. Ingested events are counted per tenant, UTC day and operation, with their bytes;
   each tenant sees its own counts only, including counts not yet flushed.
2. ``from`` and ``to`` (``YYYY-MM-DD``, inclusive) select days; without them the
   range is the current UTC month up to today (UTC), as the counts are by UTC day.
3. ``from`` after ``to``, a malformed day, or over 400 days is 422.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from tenancy_support import Harness, today

from strongroom.domain.access import Role
from strongroom.services.keys import IssuedKey
from support import bearer
from support_problems import assert_problem


async def usage(harness: Harness, key: IssuedKey, **params: str) -> dict[str, Any]:
    response = await harness.http.get("/v1/usage", params=params, headers=bearer(key.secret))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def ingested(body: dict[str, Any]) -> tuple[int, int]:
    rows = [row for row in body["data"] if row["operation"] == "events_ingested"]
    return sum(row["count"] for row in rows), sum(row["bytes"] for row in rows)


async def two_tenants(harness: Harness) -> tuple[IssuedKey, IssuedKey]:
    a = await harness.key(await harness.tenant("usage a"), Role.OPERATOR)
    b = await harness.key(await harness.tenant("usage b"), Role.OPERATOR)
    return a, b


async def test_each_tenant_sees_its_own_ingest_counts_and_bytes(harness: Harness) -> None:
    a, b = await two_tenants(harness)
    await harness.ingest(a.secret, 3)  # N = 3, in one batch
    for _ in range(5):  # M = 5, one at a time
        await harness.ingest(b.secret, 1)

    day = today()
    a_usage = await usage(harness, a, **{"from": day, "to": day})
    b_usage = await usage(harness, b, **{"from": day, "to": day})
    assert a_usage["tenant"] == a.record.tenant_id
    assert b_usage["tenant"] == b.record.tenant_id
    assert (a_usage["from"], a_usage["to"]) == (day, day)

    a_count, a_bytes = ingested(a_usage)
    b_count, b_bytes = ingested(b_usage)
    assert a_count == 3
    assert b_count == 5
    assert a_bytes > 0
    assert b_bytes > a_bytes / 3  # five requests' bodies against one
    for row in a_usage["data"] + b_usage["data"]:
        assert row["day"] == day
        assert set(row) == {"day", "operation", "count", "bytes"}

    # Flushing changes nothing a reader sees: the counts were not lost or doubled.
    await harness.state.usage.flush()
    assert ingested(await usage(harness, a, **{"from": day, "to": day})) == (a_count, a_bytes)


async def test_refused_ingests_are_not_counted(harness: Harness) -> None:
    a, _ = await two_tenants(harness)
    response = await harness.http.post(
        "/v1/events", json={"event_id": "not-a-uuid"}, headers=bearer(a.secret)
    )
    assert response.status_code == 422
    await harness.ingest(a.secret, 1)
    assert ingested(await usage(harness, a, **{"from": today(), "to": today()}))[0] == 1


async def test_from_and_to_select_days(harness: Harness) -> None:
    a, _ = await two_tenants(harness)
    await harness.ingest(a.secret, 2)
    now = datetime.now(UTC).date()

    inclusive = await usage(
        harness, a, **{"from": (now - timedelta(days=3)).isoformat(), "to": now.isoformat()}
    )
    assert ingested(inclusive)[0] == 2
    before = await usage(harness, a, **{"from": "2020-01-01", "to": "2020-01-31"})
    assert before["data"] == []
    assert (before["from"], before["to"]) == ("2020-01-01", "2020-01-31")
    after = await usage(
        harness,
        a,
        **{
            "from": (now + timedelta(days=1)).isoformat(),
            "to": (now + timedelta(days=2)).isoformat(),
        },
    )
    assert after["data"] == []


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"from": "2026-02-10", "to": "2026-02-09"}, id="from-after-to"),
        pytest.param({"from": "2024-01-01", "to": "2026-01-01"}, id="over-400-days"),
        pytest.param({"from": "yesterday"}, id="not-a-day"),
        pytest.param({"to": "2026-02-30"}, id="no-such-day"),
    ],
)
async def test_bad_ranges_are_422(harness: Harness, params: dict[str, str]) -> None:
    a, _ = await two_tenants(harness)
    response = await harness.http.get("/v1/usage", params=params, headers=bearer(a.secret))
    assert_problem(response, 422)


@pytest.fixture
def far_local_time_zone() -> Iterator[str]:
    """A local time zone whose calendar date differs from the UTC date right now."""
    hour = datetime.now(UTC).hour
    # Etc/GMT+12 is UTC-12 (yesterday before noon UTC); Etc/GMT-14 is UTC+14 (tomorrow after 10:00).
    zone = "Etc/GMT+12" if hour < 12 else "Etc/GMT-14"
    previous = os.environ.get("TZ")
    os.environ["TZ"] = zone
    time.tzset()
    try:
        yield zone
    finally:
        if previous is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = previous
        time.tzset()


async def test_the_default_range_ends_today_in_utc_whatever_the_local_zone(
    harness: Harness, far_local_time_zone: str
) -> None:
    """Counts are by UTC day; the default ``to`` must be the UTC day, or today's usage hides."""
    utc_today = datetime.now(UTC).date()
    assert date.fromtimestamp(time.time()) != utc_today, far_local_time_zone
    a, _ = await two_tenants(harness)
    await harness.ingest(a.secret, 2)

    body = await usage(harness, a)
    assert body["to"] == utc_today.isoformat(), (far_local_time_zone, body)
    assert body["from"] == utc_today.replace(day=1).isoformat()
    assert ingested(body)[0] == 2
