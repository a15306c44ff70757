"""Event ingest: ``POST /v1/events`` and the PayFlux-compatible route."""

from __future__ import annotations

from typing import Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Scope as AsgiScope

from strongroom.api.dependencies import gateway, json_response, principal
from strongroom.domain.access import Scope
from strongroom.errors import (
    RequestRejected,
    ServiceUnavailable,
    StrongroomError,
    UnsupportedMediaType,
)
from strongroom.services.usage import Operation

_ACCEPTED_TYPES: Final = ("application/json", "application/problem+json")
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


async def _ingest(request: Request, *, allow_batch: bool) -> Response:
    state = gateway(request)
    caller = principal(request, Scope.EVENTS_WRITE)
    content_type = request.headers.get("content-type", "application/json")
    if content_type.split(";")[0].strip().lower() not in _ACCEPTED_TYPES:
        state.metrics.events_rejected.labels("unsupported_media_type").inc()
        raise UnsupportedMediaType("Send events as application/json.")
    try:
        body = await request.body()
        result = await state.ingest.ingest(caller.tenant, body, allow_batch=allow_batch)
    except (RequestRejected, ServiceUnavailable) as refusal:
        _count_refusal(request, refusal)
        raise
    state.usage.record(caller.tenant, Operation.EVENTS_INGESTED, len(result.accepted), len(body))
    state.metrics.events_accepted.inc(len(result.accepted))
    if result.duplicates:
        state.metrics.events_duplicate.inc(len(result.duplicates))
    return json_response(
        {"accepted": result.accepted, "duplicates": result.duplicates}, status_code=202
    )


def _count_refusal(request: Request, refusal: StrongroomError) -> None:
    state = gateway(request)
    state.metrics.events_rejected.labels(refusal.code).inc()
    if refusal.code == "overloaded":
        state.metrics.backpressure.inc()


async def ingest_events(request: Request) -> Response:
    return await _ingest(request, allow_batch=True)


async def ingest_payment_exhaust(request: Request) -> Response:
    return await _ingest(request, allow_batch=False)


# Plain Starlette routes: ingest is the hot path, and FastAPI's per-request
# dependency and response machinery would cost more than the work itself. The
# body is validated by pydantic on the raw bytes either way; the OpenAPI entries
# below describe these routes for clients and fuzzers.
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
