"""Helpers for the HTTP integration tests: stream reads, metrics, leak checks.

The root ``client`` fixture serves one app from one peer address. Tests that need
several peers on one app, or an app built from custom settings inside the test,
use ``support_app.running``/``support_app.peer`` or the ``serve`` fixture in this
folder's conftest; everything runs in process over ``httpx.ASGITransport`` with the
lifespan entered, exactly as the root fixture does.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from support import AUTH, TOKENIZED_URL, event_ids
from support_app import read_pages


def error_fields(body: dict[str, Any]) -> set[str]:
    return {entry["field"] for entry in body.get("errors", [])}


async def stored_records(
    client: httpx.AsyncClient, *, headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Every record of ``payments.tokenized`` visible to the caller, in offset order."""
    return await read_pages(client, TOKENIZED_URL, headers or AUTH, pages=None)


async def stored_ids(client: httpx.AsyncClient) -> list[str]:
    return event_ids(await stored_records(client))


async def metric_samples(client: httpx.AsyncClient) -> list[tuple[str, dict[str, str], float]]:
    """Every sample ``/metrics`` exposes, as (name, labels, value)."""
    response = await client.get("/metrics")
    assert response.status_code == 200
    return [
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    ]


async def metric_value(client: httpx.AsyncClient, name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels`` (0 when absent)."""
    return sum(
        value
        for sample_name, sample_labels, value in await metric_samples(client)
        if sample_name == name and all(sample_labels.get(k) == v for k, v in labels.items())
    )


def assert_no_digits_of(pan: str, response: httpx.Response) -> None:
    """Neither the body nor any header holds the PAN's digits, in any grouping.

    The digits count as present when they appear in order joined by at most one space
    or dash each, which covers "4111111111111111", "4111 1111 ..." and "4111-1111-...".
    """
    leak = re.compile(r"[ \-]?".join(pan))
    texts: Iterable[str] = [response.text, *(f"{k}: {v}" for k, v in response.headers.items())]
    for text in texts:
        assert leak.search(text) is None, f"the card number leaked: {text}"


class Failures:
    """Collects the failing cases of a test that checks many, so all are reported at once.

    ``with failures.case("name"): ...`` records an AssertionError instead of raising
    it; ``failures.check()`` then fails the test listing every recorded case.
    """

    def __init__(self) -> None:
        self.items: list[str] = []

    @contextlib.contextmanager
    def case(self, name: str) -> Iterator[None]:
        try:
            yield
        except AssertionError as exc:
            self.items.append(f"{name}: {exc}")

    def check(self) -> None:
        assert not self.items, f"{len(self.items)} case(s) failed:\n" + "\n".join(self.items)
