"""Helpers routes use to reach the gateway state and the caller's identity."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, TypeVar

import orjson
from starlette.requests import Request
from starlette.responses import Response

from strongroom.api.state import GatewayState
from strongroom.domain.access import Scope
from strongroom.errors import PermissionDenied
from strongroom.services.auth import Principal
from strongroom.services.screening import screen

T = TypeVar("T")

JSON: Final = "application/json"
#: Offsets and sequence numbers are stored as signed 64-bit integers; larger ones are 422.
MAX_INT64: Final = 2**63 - 1
_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def gateway(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gateway
    return state


def principal(request: Request, scope: Scope) -> Principal:
    """The authenticated caller, who must hold ``scope``.

    Raises:
        PermissionDenied: the key lacks the scope; the message names it.
    """
    return principal_of(request.scope["state"], scope)


def principal_of(request_state: dict[str, Any], scope: Scope) -> Principal:
    """``principal`` from an ASGI scope's ``state``, for routes without a ``Request``.

    Raises:
        PermissionDenied: the key lacks the scope; the message names it.
    """
    caller: Principal = request_state["principal"]
    if scope not in caller.scopes:
        raise PermissionDenied(f"This API key lacks the scope '{scope.value}'.")
    return caller


def requires(scope: Scope) -> Callable[[Request], Principal]:
    """A route dependency: the caller, who must hold ``scope``.

    As a dependency it runs before the body is validated, so a key without the
    scope gets 403 whatever it sent.
    """

    def dependency(request: Request) -> Principal:
        return principal(request, scope)

    return dependency


async def screened_body(request: Request) -> None:
    """Router dependency: refuse card data anywhere in a JSON body before parsing it."""
    if request.method in _BODY_METHODS:
        body = await request.body()
        if body:
            screen(body)


def card_body(*card_fields: str) -> Callable[[Request], Awaitable[None]]:
    """Router dependency for the token vault: a card number is expected only in ``card_fields``."""
    allowed = frozenset(card_fields)

    async def dependency(request: Request) -> None:
        body = await request.body()
        if body:
            screen(body, card_fields=allowed)

    return dependency


def page(
    items: Sequence[T], limit: int, cursor: Callable[[T], object], view: Callable[[T], object]
) -> Response:
    """A cursor-paginated list: ``{"data": [...], "next": cursor or null}``.

    ``next`` is the last item's cursor when the page is full (there may be
    more), and null when the page is short (there is nothing after it).
    """
    next_after = cursor(items[-1]) if items and len(items) == limit else None
    return json_response({"data": [view(item) for item in items], "next": next_after})


def json_response(content: object, status_code: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status_code, media_type=JSON)
