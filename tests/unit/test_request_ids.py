"""Generated request ids never look like card numbers, whatever the counter reaches,
and a forked process does not repeat its parent's ids."""

from __future__ import annotations

import itertools
import os

import pytest

from strongroom.api import middleware
from strongroom.domain.cards import contains_pan


@pytest.mark.parametrize("prefix", ["123456789012", "000000000000", "9f8e7d6c5b4a"])
def test_generated_ids_never_contain_a_card_number(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The all-digit prefix is the worst case: with the counter's digits right
    # after it, a run of 13 or more digits could pass the Luhn check.
    monkeypatch.setattr(middleware._IDS, "prefix", prefix + "r")
    starts = (1, 10**6, 16**11 - 5000)
    for start in starts:
        monkeypatch.setattr(middleware._IDS, "counter", itertools.count(start))
        for _ in range(2_000):
            request_id = middleware._request_id({"headers": []})
            assert not contains_pan(request_id), request_id


def test_a_forked_child_hands_out_ids_of_its_own() -> None:
    parent_id = middleware._request_id({"headers": []})
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read)
        os.write(write, middleware._request_id({"headers": []}).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        child_id = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert child_id
    assert child_id != parent_id
    assert child_id.split("r")[0] != parent_id.split("r")[0], (parent_id, child_id)
    # The parent's own sequence goes on where it was.
    assert middleware._request_id({"headers": []}) != child_id
