"""The app factory: one ASGI app serving the API, /health, /ready and /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException
from starlette.responses import Response

import strongroom
from strongroom.adapters.ratelimit import LimitsRateLimiter
from strongroom.adapters.sqlite.log import SqliteEventLog
from strongroom.api.middleware import Authentication, BodyLimit, RequestContext
from strongroom.api.problems import problem, problem_for
from strongroom.api.routes import events, operations, streams
from strongroom.api.state import GatewayState, build_keys, load_pepper
from strongroom.config import Settings
from strongroom.domain.events import EventBatch, PaymentEvent
from strongroom.errors import FieldError, StrongroomError
from strongroom.observability.logging import get_logger
from strongroom.ports import EventLog
from strongroom.services.ingest import IngestService, field_path


def build_state(settings: Settings, log: EventLog | None = None) -> GatewayState:
    """Open the adapters named by the settings and wire the services."""
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    pepper = load_pepper(settings)
    event_log = log or SqliteEventLog(
        settings.database_path, max_queued_events=settings.writer_queue_max_events
    )
    return GatewayState(
        settings=settings,
        log=event_log,
        limiter=LimitsRateLimiter(),
        keys=build_keys(settings, pepper),
        pepper=pepper,
        ingest=IngestService(event_log, max_event_bytes=settings.max_event_bytes),
        logger=get_logger("strongroom"),
    )


def create_app(settings: Settings, *, log: EventLog | None = None) -> FastAPI:
    state = build_state(settings, log)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, state.reload_keys)
        state.logger.info("gateway_started", version=strongroom.__version__, keys=len(state.keys))
        try:
            yield
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signal.SIGHUP)
            await state.log.aclose()
            state.logger.info("gateway_stopped")

    app = FastAPI(
        title="Strongroom",
        version=strongroom.__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.gateway = state
    app.include_router(operations.router)
    app.include_router(events.router)
    app.include_router(streams.router)
    _install_error_handlers(app)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    # Starlette wraps in reverse order of addition: the last added is outermost.
    app.add_middleware(Authentication, state=state)
    app.add_middleware(BodyLimit, state=state)
    app.add_middleware(RequestContext, state=state)
    return app


def _request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


def _install_error_handlers(app: FastAPI) -> None:
    async def on_strongroom_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StrongroomError)
        return problem_for(exc, _request_id(request))

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [
            FieldError(field_path([p for p in e["loc"] if p != "body"]) or "body", e["msg"])
            for e in exc.errors()
        ]
        return problem(
            422, "validation_failed", "The request is invalid.", _request_id(request),
            errors=errors,
        )  # fmt: skip

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        detail = {
            404: "There is no such resource.",
            405: "The method is not allowed on this resource.",
        }.get(exc.status_code, "The request could not be served.")
        return problem(exc.status_code, code, detail, _request_id(request), headers=exc.headers)

    app.add_exception_handler(StrongroomError, on_strongroom_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(HTTPException, on_http_error)


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
    _, definitions = models_json_schema(
        [(PaymentEvent, "validation"), (EventBatch, "validation")],
        ref_template="#/components/schemas/{model}",
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(definitions["$defs"])
    components["IngestBody"] = {
        "oneOf": [
            {"$ref": "#/components/schemas/PaymentEvent"},
            {"$ref": "#/components/schemas/EventBatch"},
        ]
    }
    schema["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    schema["security"] = [{"bearer": []}]
    app.openapi_schema = schema
    return schema
