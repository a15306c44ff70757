"""Usage is counted by UTC day: the day label of any instant, around midnight included."""

from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st

from strongroom.services.usage import SECONDS_PER_DAY, utc_day

MIDNIGHT = 1_764_892_800  # 2025-12-05T00:00:00Z


@given(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False))
def test_the_day_label_is_the_utc_date_of_the_instant(at: float) -> None:
    assert utc_day(at) == time.strftime("%Y-%m-%d", time.gmtime(at))


def test_a_day_ends_at_midnight_utc() -> None:
    assert utc_day(MIDNIGHT - 0.000001) == "2025-12-04"
    assert utc_day(MIDNIGHT) == "2025-12-05"
    assert utc_day(MIDNIGHT + SECONDS_PER_DAY - 0.5) == "2025-12-05"
    assert utc_day(MIDNIGHT + SECONDS_PER_DAY) == "2025-12-06"
