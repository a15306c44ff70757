"""Helpers routes use to reach the gateway state and the caller's identity."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import orjson
from starlette.requests import Request
from starlette.responses import Response

from strongroom.api.state import GatewayState
from strongroom.domain.access import Scope
from strongroom.errors import PermissionDenied
from strongroom.services.auth import Principal
from strongroom.services.screening import screen

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
    caller: Principal = request.state.principal
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


def json_response(content: object, status_code: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status_code, media_type=JSON)
