"""Event ingest: ``POST /v1/events`` and the PayFlux-compatible route."""

from __future__ import annotations

from typing import Final

import orjson
from starlette.requests import ClientDisconnect
from starlette.routing import Match, Route
from starlette.types import Receive, Send
from starlette.types import Scope as AsgiScope

from strongroom.api.dependencies import principal_of
from strongroom.api.middleware import header
from strongroom.api.state import GatewayState
from strongroom.domain.access import Scope
from strongroom.errors import (
    RequestRejected,
    ServiceUnavailable,
    StrongroomError,
    UnsupportedMediaType,
)
from strongroom.services.usage import Operation

_ACCEPTED_TYPES: Final = ("application/json", "application/problem+json")
_ACK_HEADERS: Final = ((b"content-type", b"application/json"),)
_ACK_SCHEMA: Final = {
    "type": "object",
    "properties": {
        "accepted": {"type": "array", "items": {"type": "string", "format": "uuid"}},
        "duplicates": {"type": "array", "items": {"type": "string", "format": "uuid"}},
    },
    "required": ["accepted", "duplicates"],
}


def _openapi(body_ref: str) -> dict[str, object]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": body_ref}}},
        },
        "responses": {
            "202": {
                "description": "Committed durably; duplicates were stored before.",
                "content": {"application/json": {"schema": _ACK_SCHEMA}},
            }
        },
    }


class _IngestEndpoint:
    """An ingest route as a plain ASGI app.

    The body arrives whole (``BodyLimit`` reads it first) and the answer is two
    ASGI messages: Starlette's request and response objects would cost more
    than a single event's own work. Refusals are raised as ``StrongroomError``
    for the caller to answer (``Shortcut``, or FastAPI's handlers).
    """

    def __init__(self, *, allow_batch: bool) -> None:
        self.allow_batch = allow_batch

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        state: GatewayState = scope["app"].state.gateway
        caller = principal_of(scope["state"], Scope.EVENTS_WRITE)
        content_type = header(scope, b"content-type") or "application/json"
        if content_type.split(";")[0].strip().lower() not in _ACCEPTED_TYPES:
            state.metrics.events_rejected.labels("unsupported_media_type").inc()
            raise UnsupportedMediaType("Send events as application/json.")
        try:
            body = await _whole_body(receive)
            result = await state.ingest.ingest(caller.tenant, body, allow_batch=self.allow_batch)
        except (RequestRejected, ServiceUnavailable) as refusal:
            _count_refusal(state, refusal)
            raise
        accepted = len(result.accepted)
        state.usage.record(caller.tenant, Operation.EVENTS_INGESTED, accepted, len(body))
        state.metrics.events_accepted.inc(accepted)
        if result.duplicates:
            state.metrics.events_duplicate.inc(len(result.duplicates))
        payload = orjson.dumps({"accepted": result.accepted, "duplicates": result.duplicates})
        headers = [*_ACK_HEADERS, (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": 202, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


async def _whole_body(receive: Receive) -> bytes:
    """Every chunk of the request body, as Starlette's ``Request.body`` reads it."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _count_refusal(state: GatewayState, refusal: StrongroomError) -> None:
    state.metrics.events_rejected.labels(refusal.code).inc()
    if refusal.code == "overloaded":
        state.metrics.backpressure.inc()


ingest_events = _IngestEndpoint(allow_batch=True)
ingest_payment_exhaust = _IngestEndpoint(allow_batch=False)


# Plain Starlette routes with ASGI endpoints: ingest is the hot path, and
# FastAPI's per-request dependency and response machinery would cost more than
# the work itself. The OpenAPI entries below describe these routes for clients
# and fuzzers.
class _NamedRoute(Route):
    """A Starlette route that, like FastAPI's, names itself in the scope for metrics."""

    def matches(self, scope: AsgiScope) -> tuple[Match, AsgiScope]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route"] = self
        return match, child_scope


routes = [
    _NamedRoute("/v1/events", ingest_events, methods=["POST"]),
    _NamedRoute("/v1/events/payment_exhaust", ingest_payment_exhaust, methods=["POST"]),
]

OPENAPI_PATHS: Final = {
    "/v1/events": {
        "post": {
            "tags": ["events"],
            "summary": "Ingest one event or a batch of 1 to 100 events",
            "operationId": "ingest_events",
            **_openapi("#/components/schemas/IngestBody"),
        }
    },
    "/v1/events/payment_exhaust": {
        "post": {
            "tags": ["events"],
            "summary": "Ingest one PayFlux payment-exhaust event, unchanged",
            "operationId": "ingest_payment_exhaust",
            **_openapi("#/components/schemas/PaymentEvent"),
        }
    },
}
