"""Helpers for the scale tests: posting events, reading a whole topic, usage counts."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import httpx

from support import TOKENIZED_URL, UNTHROTTLED_ENV, card_free_event

#: Every limiter out of the way, the per-tenant one included: these tests measure
#: consistency under concurrency, not the limits.
NO_LIMITS_ENV: Final = {
    **UNTHROTTLED_ENV,
    "STRONGROOM_TENANT_RATELIMIT_RPS": "1000000",
    "STRONGROOM_TENANT_RATELIMIT_BURST": "1000000",
}
PAGE: Final = 1000


def events(count: int) -> list[dict[str, Any]]:
    return [card_free_event() for _ in range(count)]


def body_of(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One event alone as a bare object, several as ``{"events": [...]}``."""
    return dict(batch[0]) if len(batch) == 1 else {"events": list(batch)}


def read_topic(
    client: httpx.Client, headers: dict[str, str], *, url: str = TOKENIZED_URL
) -> list[dict[str, Any]]:
    """Every record of the caller's tenant in ``url``'s topic, page by page."""
    records: list[dict[str, Any]] = []
    after: int | None = None
    while True:
        params: dict[str, Any] = {"limit": PAGE}
        if after is not None:
            params["after"] = after
        response = client.get(url, params=params, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        records.extend(page["data"])
        if page["next"] is None:
            return records
        after = page["next"]


def assert_dense(offsets: Sequence[int], start: int = 0) -> None:
    """Offsets strictly increasing by one from ``start``: no gap, no repeat, no reorder."""
    expected = list(range(start, start + len(offsets)))
    if list(offsets) != expected:
        wrong = next(i for i, (a, b) in enumerate(zip(offsets, expected, strict=True)) if a != b)
        around = list(offsets[max(0, wrong - 3) : wrong + 3])
        raise AssertionError(
            f"offsets are not dense from {start}: position {wrong} holds {offsets[wrong]}, "
            f"expected {expected[wrong]} (around it: {around})"
        )


def ingested(client: httpx.Client, headers: dict[str, str]) -> tuple[int, int]:
    """The tenant's ``events_ingested`` (count, bytes) over the current month, as one
    gateway reports it."""
    response = client.get("/v1/usage", headers=headers)
    assert response.status_code == 200, response.text
    rows = [row for row in response.json()["data"] if row["operation"] == "events_ingested"]
    return sum(row["count"] for row in rows), sum(row["bytes"] for row in rows)


def wait_for(check: Callable[[], bool], timeout: float, what: str, poll: float = 0.1) -> float:
    """Poll until ``check()`` holds; return the seconds it took, fail after ``timeout``."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(poll)
    return time.monotonic() - started
