"""Tests for how the ingest routes read a request body without Starlette's Request."""

from __future__ import annotations

import pytest
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive

from strongroom.api.routes.events import _whole_body


def _receiving(*messages: Message) -> Receive:
    pending = list(messages)

    async def receive() -> Message:
        return pending.pop(0)

    return receive


async def test_a_body_sent_in_chunks_is_read_whole() -> None:
    receive = _receiving(
        {"type": "http.request", "body": b'{"event', "more_body": True},
        {"type": "http.request", "more_body": True},
        {"type": "http.request", "body": b'_id": 1}', "more_body": False},
    )
    assert await _whole_body(receive) == b'{"event_id": 1}'


async def test_an_empty_body_is_empty() -> None:
    assert await _whole_body(_receiving({"type": "http.request"})) == b""


async def test_a_client_gone_mid_body_is_a_disconnect_as_starlette_reports_it() -> None:
    receive = _receiving(
        {"type": "http.request", "body": b"{", "more_body": True},
        {"type": "http.disconnect"},
    )
    with pytest.raises(ClientDisconnect):
        await _whole_body(receive)
