"""Generated request ids never look like card numbers, whatever the counter reaches."""

from __future__ import annotations

import itertools

import pytest

from strongroom.api import middleware
from strongroom.domain.cards import contains_pan


@pytest.mark.parametrize("prefix", ["123456789012", "000000000000", "9f8e7d6c5b4a"])
def test_generated_ids_never_contain_a_card_number(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The all-digit prefix is the worst case: with the counter's digits right
    # after it, a run of 13 or more digits could pass the Luhn check.
    monkeypatch.setattr(middleware, "_ID_PREFIX", prefix)
    starts = (1, 10**6, 16**11 - 5000)
    for start in starts:
        monkeypatch.setattr(middleware, "_ID_COUNTER", itertools.count(start))
        for _ in range(2_000):
            request_id = middleware._request_id({"headers": []})
            assert not contains_pan(request_id), request_id
