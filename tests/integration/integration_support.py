"""Helpers for the HTTP integration tests: problem checks, stream reads, metrics.

The root ``client`` fixture serves one app from one peer address. Tests that need
several peers on one app, or an app built from custom settings inside the test,
use ``running``/``peer`` here or the ``serve`` fixture in this folder's conftest;
everything runs in process over ``httpx.ASGITransport`` with the lifespan entered,
exactly as the root fixture does.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from strongroom.config import Settings
from strongroom.domain.cards import contains_pan
from support import AUTH, KEY, OTHER_KEY
from support import event as any_event

PROBLEM_JSON = "application/problem+json"
TOKENIZED_URL = "/v1/streams/payments.tokenized"
PROBLEM_FIELDS = ("type", "title", "status", "detail", "code", "request_id")
_RANDOM_FIELDS = ("event_id", "merchant_id_hash", "payment_intent_id_hash")


def event(**overrides: Any) -> dict[str, Any]:
    """``support.event`` whose random identifiers hold nothing the card screen refuses.

    About 0.3% of random UUIDs (and 0.05% of random hex hashes) contain a 13-19 digit
    run, joined by dashes, that passes Luhn, which the gateway refuses as a card number.
    Tests that are not about screening must not fail by that chance, so such draws are
    redrawn here.
    """
    while True:
        body = any_event()
        if not any(contains_pan(body[name]) for name in _RANDOM_FIELDS):
            body.update(overrides)
            return body


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings like the root fixture's, with overrides (rate limits, sizes, keys)."""
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "api_keys": (SecretStr(KEY), SecretStr(OTHER_KEY)),
        "access_log": False,
    }
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[FastAPI]:
    async with app.router.lifespan_context(app):
        yield app


def peer(app: FastAPI, ip: str = "127.0.0.1") -> httpx.AsyncClient:
    """A client whose requests reach ``app`` from the socket peer ``ip``."""
    transport = httpx.ASGITransport(app=app, client=(ip, 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://gateway")


def assert_problem(
    response: httpx.Response, status: int, code: str | None = None
) -> dict[str, Any]:
    """The response is an RFC 9457 problem with every member the design promises."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    for member in PROBLEM_FIELDS:
        assert member in body, f"problem body lacks {member!r}: {body}"
    assert body["status"] == status
    assert body["type"].endswith("/" + body["code"])
    assert isinstance(body["title"], str)
    assert body["title"]
    assert isinstance(body["detail"], str)
    assert body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]
    if code is not None:
        assert body["code"] == code, body
    for entry in body.get("errors", []):
        assert set(entry) >= {"field", "message"}, entry
        assert isinstance(entry["field"], str)
        assert entry["field"]
        assert isinstance(entry["message"], str)
        assert entry["message"]
    return body


def error_fields(body: dict[str, Any]) -> set[str]:
    return {entry["field"] for entry in body.get("errors", [])}


async def stored_records(
    client: httpx.AsyncClient, *, headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Every record of ``payments.tokenized`` visible to the caller, in offset order."""
    records: list[dict[str, Any]] = []
    after: int | None = None
    while True:
        params: dict[str, int] = {"limit": 1000}
        if after is not None:
            params["after"] = after
        response = await client.get(TOKENIZED_URL, params=params, headers=headers or AUTH)
        assert response.status_code == 200, response.text
        page = response.json()
        records.extend(page["data"])
        if page["next"] is None:
            return records
        after = page["next"]


async def stored_ids(client: httpx.AsyncClient) -> list[str]:
    return [record["record"]["event_id"] for record in await stored_records(client)]


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
