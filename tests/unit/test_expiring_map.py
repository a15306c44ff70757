"""The in-process map of recently known cards: expiry, bound and sweeping."""

from __future__ import annotations

import pytest

from strongroom.services.expiring import ExpiringMap


def test_an_entry_lives_ttl_seconds_from_its_last_put() -> None:
    known: ExpiringMap[str, int] = ExpiringMap(ttl=5, max_entries=10)
    known.put("a", 1, now=100)
    assert known.get("a", now=104.9) == 1
    known.put("a", 2, now=103)
    assert known.get("a", now=107.9) == 2
    assert known.get("a", now=108) is None
    assert len(known) == 0


def test_each_put_sweeps_what_expired_even_if_nobody_asks_again() -> None:
    known: ExpiringMap[int, int] = ExpiringMap(ttl=5, max_entries=100_000)
    for second in range(1_000):
        known.put(second, second, now=float(second))
        # Only what was put in the last five seconds is held.
        assert len(known) <= 5
    assert known.get(999, now=999.5) == 999
    assert known.get(990, now=999.5) is None


def test_past_the_bound_the_oldest_go_first() -> None:
    known: ExpiringMap[str, int] = ExpiringMap(ttl=60, max_entries=2)
    known.put("a", 1, now=0)
    known.put("b", 2, now=1)
    known.put("a", 3, now=2)  # put again: now the newest
    known.put("c", 4, now=3)
    assert len(known) == 2
    assert known.get("b", now=4) is None
    assert known.get("a", now=4) == 3
    assert known.get("c", now=4) == 4


def test_pop_and_drop_where() -> None:
    known: ExpiringMap[tuple[str, str], int] = ExpiringMap(ttl=60, max_entries=10)
    for tenant in ("t1", "t2"):
        for card in ("x", "y"):
            known.put((tenant, card), 1, now=0)
    known.pop(("t2", "x"))
    known.pop(("t2", "missing"))
    known.drop_where(lambda key: key[0] == "t1")
    assert len(known) == 1
    assert known.get(("t2", "y"), now=1) == 1


@pytest.mark.parametrize(("ttl", "max_entries"), [(0, 1), (-1, 1), (5, 0)])
def test_bounds_must_make_sense(ttl: float, max_entries: int) -> None:
    with pytest.raises(ValueError, match="ttl must be positive"):
        ExpiringMap(ttl=ttl, max_entries=max_entries)
