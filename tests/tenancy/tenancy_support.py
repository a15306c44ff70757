"""Helpers for the tenancy tests: a gateway without configured keys, keys made through
the services, and problem checks about access.

Every in-process gateway here starts with no ``STRONGROOM_API_KEYS``: tenants and
managed keys are created through the services on ``app.state.gateway`` after the
lifespan has started, exactly as ``strongroom init`` and ``keys create`` do.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx

from strongroom.config import Settings
from strongroom.services.usage import utc_day
from support import KEY_IN_TEXT, TOKENIZED_URL, bearer, card_free_event, event_ids
from support_app import InProcessGateway, make_settings, read_pages, serving
from support_problems import assert_problem

KEY_PATTERN: Final = re.compile(r"^sr_(live|test)_[0-9A-Za-z]{38}$")
KEY_ID_PATTERN: Final = re.compile(r"^key_[0-9A-Za-z]{12}$")
TENANT_ID_PATTERN: Final = re.compile(r"^ten_[0-9A-Za-z]{16}$")
#: Failed-attempt limits high enough that tests about 401s are not cut short by 429s.
UNTHROTTLED_IP: Final[dict[str, Any]] = {
    "ip_ratelimit_rps": 10_000.0,
    "ip_ratelimit_burst": 100_000,
}


def today() -> str:
    """Today's UTC day, the unit usage is counted in."""
    return utc_day(time.time())


def assert_unauthorized(response: httpx.Response) -> dict[str, Any]:
    body = assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].lower().startswith("bearer"), response.headers
    return body


def assert_forbidden_naming(response: httpx.Response, *names: str) -> dict[str, Any]:
    """403 problem whose detail names every one of ``names``."""
    body = assert_problem(response, 403)
    for name in names:
        assert name in body["detail"], f"the 403 does not name {name!r}: {body['detail']}"
    return body


def without_request_id(response: httpx.Response) -> dict[str, Any]:
    body = dict(response.json())
    body.pop("request_id")
    return body


def assert_no_secret_material(value: Any) -> None:
    """A key view (or list of them) holds no secret and no hash of one."""
    text = json.dumps(value)
    assert KEY_IN_TEXT.search(text) is None, text
    assert "sr_live_" not in text
    assert "sr_test_" not in text
    for view in value if isinstance(value, list) else [value]:
        assert "key" not in view, view
        for field in view:
            assert "hash" not in field.lower(), view
            assert "secret" not in field.lower(), view


@dataclass
class Harness(InProcessGateway):
    """One in-process gateway (lifespan entered) and a client on it."""

    async def ingest(self, secret: str, count: int = 1) -> list[str]:
        """Ingest ``count`` events as one batch with ``secret``; the accepted event ids."""
        events = [card_free_event() for _ in range(count)]
        response = await self.http.post(
            "/v1/events", json={"events": events}, headers=bearer(secret)
        )
        assert response.status_code == 202, response.text
        accepted: list[str] = response.json()["accepted"]
        assert sorted(accepted) == sorted(e["event_id"] for e in events)
        return accepted

    async def stream(self, secret: str) -> list[dict[str, Any]]:
        """Every record of ``payments.tokenized`` the key's tenant can read."""
        return await read_pages(self.http, TOKENIZED_URL, bearer(secret))

    async def event_ids(self, secret: str) -> list[str]:
        return event_ids(await self.stream(secret))


def tenancy_settings(directory: Path, **overrides: Any) -> Settings:
    """Settings with no configured keys and no access log, plus ``overrides``."""
    return make_settings(directory, **{"api_keys": (), **UNTHROTTLED_IP, **overrides})


@contextlib.asynccontextmanager
async def open_harness(directory: Path, **overrides: Any) -> AsyncIterator[Harness]:
    async with serving(tenancy_settings(directory, **overrides)) as (app, http):
        yield Harness(app, http)
