"""When cached keys and tenant settings expire under load, the requests that miss
together cause one store read per key, not one each (``services.single_flight``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from strongroom.api.state import GatewayState
from support import JSON_HEADERS, card_free_event
from support_app import make_settings, serving

CONCURRENT = 20


def _counting(monkeypatch: pytest.MonkeyPatch, target: Any, name: str) -> list[int]:
    """Wrap ``target.name`` so each call is counted and takes a moment, as a busy store does."""
    calls: list[int] = []
    original: Callable[..., Awaitable[Any]] = getattr(target, name)

    async def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        await asyncio.sleep(0.05)
        return await original(*args, **kwargs)

    monkeypatch.setattr(target, name, counted)
    return calls


async def test_expired_key_data_is_read_once_for_a_burst_of_requests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving(make_settings(tmp_path)) as (app, http):
        state: GatewayState = app.state.gateway
        assert (await http.get("/v1/streams/payments.tokenized", headers=JSON_HEADERS)).is_success
        tenant_reads = _counting(monkeypatch, state.store.tenants, "get")
        state.keys.forget()

        answers = await asyncio.gather(
            *(
                http.get("/v1/streams/payments.tokenized", headers=JSON_HEADERS)
                for _ in range(CONCURRENT)
            )
        )

    assert [answer.status_code for answer in answers] == [200] * CONCURRENT
    assert len(tenant_reads) == 1


async def test_expired_tenant_settings_are_read_once_for_a_burst_of_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving(make_settings(tmp_path)) as (app, http):
        state: GatewayState = app.state.gateway
        settings_reads = _counting(monkeypatch, state.store.tenant_settings, "get")

        answers = await asyncio.gather(
            *(
                http.post("/v1/events", json=card_free_event(), headers=JSON_HEADERS)
                for _ in range(CONCURRENT)
            )
        )

    assert [answer.status_code for answer in answers] == [202] * CONCURRENT
    assert len(settings_reads) == 1
