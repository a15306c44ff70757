"""Helpers routes use to reach the gateway state and the caller's identity."""

from __future__ import annotations

from typing import Final

import orjson
from fastapi import Request
from starlette.responses import Response

from strongroom.api.state import GatewayState
from strongroom.errors import PermissionDenied
from strongroom.services.auth import Principal

JSON: Final = "application/json"


def gateway(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gateway
    return state


def principal(request: Request, scope: str) -> Principal:
    """The authenticated caller, who must hold ``scope``.

    Raises:
        PermissionDenied: the key lacks the scope; the message names it.
    """
    caller: Principal = request.state.principal
    if scope not in caller.scopes:
        raise PermissionDenied(f"This API key lacks the scope {scope!r}.")
    return caller


def json_response(content: object, status_code: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status_code, media_type=JSON)
