"""The app factory: one ASGI app serving the API, /health, /ready and /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp

import strongroom
from strongroom.api.middleware import (
    Authentication,
    BodyLimit,
    RequestContext,
    Shortcut,
    UrlScreening,
)
from strongroom.api.problems import problem, problem_for
from strongroom.api.routes import FAST_ROUTES, ROUTERS
from strongroom.api.routes.events import OPENAPI_PATHS
from strongroom.api.state import GatewayState, open_gateway
from strongroom.config import Settings
from strongroom.domain.events import EventBatch, PaymentEvent
from strongroom.domain.topics import RISK_SIGNALS
from strongroom.errors import FieldError, StrongroomError
from strongroom.observability.logging import get_logger
from strongroom.observability.metrics import Metrics
from strongroom.ports import NewRecord
from strongroom.services.ingest import field_path


def create_app(settings: Settings, *, migrate: bool = False) -> FastAPI:
    """The gateway as an ASGI app; its lifespan opens and closes the store."""
    metrics = Metrics()
    logger = get_logger("strongroom")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = await open_gateway(settings, metrics, logger, migrate=migrate)
        app.state.gateway = state
        _report_record_index(state, logger)
        if len(state.keys.configured):
            await state.tenants.ensure_default()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, state.reload_keys)
        flusher = asyncio.create_task(_flush_periodically(state))
        checkpointer = asyncio.create_task(_checkpoint_periodically(state))
        signals = asyncio.create_task(_publish_signals_periodically(state))
        logger.info("gateway_started", version=strongroom.__version__)
        try:
            yield
        finally:
            for task in (flusher, checkpointer, signals):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signal.SIGHUP)
            await _flush(state)
            await _checkpoint(state)
            await state.aclose()
            logger.info("gateway_stopped")

    def front(inner: ASGIApp) -> ASGIApp:
        # Outermost first: every response, errors included, passes through all of them.
        shortcut = Shortcut(inner, FAST_ROUTES)
        authenticated = Authentication(shortcut, holder=app.state)
        limited = BodyLimit(authenticated, limit=settings.max_request_bytes, metrics=metrics)
        screened = UrlScreening(limited)
        return RequestContext(
            screened, metrics=metrics, logger=logger,
            access_log=settings.access_log,
        )  # fmt: skip

    app = GatewayApp(
        front,
        title="Strongroom",
        version=strongroom.__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.router.routes.extend(FAST_ROUTES)
    for router in ROUTERS:
        app.include_router(router)
    _install_error_handlers(app)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _report_record_index(state: GatewayState, logger: Any) -> None:
    """Said by a serving gateway only: CLI commands open the same store, and
    their output is for their caller."""
    start = state.store.record_index_start
    if start is None:
        return
    if start.in_memory:
        logger.warning(
            "record_index_in_memory",
            detail="another process holds the event log's idempotency index; this "
            "gateway keeps its own in memory, filled from the log on its first write "
            "to each topic",
        )
    elif start.records_read:
        # After a crash, a deleted index or a restored database: it explains a slow start.
        logger.info(
            "record_index_caught_up",
            records=start.records_read,
            seconds=round(start.seconds, 3),
        )


class GatewayApp(FastAPI):
    """FastAPI with Strongroom's request pipeline outside the framework's own stack.

    The pipeline (``api.middleware``) handles its own errors, so it can sit
    outermost; FastAPI's error, exception and routing layers then run only for
    the requests that reach them, and the ingest hot path skips them entirely.
    """

    def __init__(self, front: Callable[[ASGIApp], ASGIApp], **kwargs: Any) -> None:
        self._front = front
        super().__init__(**kwargs)

    def build_middleware_stack(self) -> ASGIApp:
        return self._front(super().build_middleware_stack())


async def _flush(state: GatewayState) -> None:
    """Write usage counters and key last-use times; a failure is logged and retried later."""
    for flush in (state.usage.flush, state.keys.flush_last_used):
        try:
            await flush()
        except StrongroomError as exc:
            state.logger.warning("flush_failed", error=exc.code)


async def _checkpoint(state: GatewayState) -> None:
    try:
        signed = await state.audit.checkpoint()
    except StrongroomError as exc:
        state.logger.warning("checkpoint_failed", error=exc.code)
        return
    if signed is not None:
        state.logger.info("audit_checkpoint", tree_size=signed.checkpoint.tree_size)


async def _checkpoint_periodically(state: GatewayState) -> None:
    """Sign a checkpoint every N records or T seconds, whichever comes first."""
    settings = state.settings
    last_size, last_time = 0, state.clock.now()
    while True:
        await asyncio.sleep(min(1.0, settings.audit_checkpoint_seconds))
        try:
            size = await state.store.audit.size()
        except StrongroomError:
            continue
        due_by_count = size - last_size >= settings.audit_checkpoint_records
        due_by_time = state.clock.now() - last_time >= settings.audit_checkpoint_seconds
        if size > last_size and (due_by_count or due_by_time):
            await _checkpoint(state)
            last_size, last_time = size, state.clock.now()


async def publish_signals(state: GatewayState) -> int:
    """Publish processor-health band changes on ``risk.signals`` and refresh the gauges.

    Returns how many changes were published; a failed publish is logged, and
    those changes are not retried (the next change of band is).
    """
    now = state.clock.now()
    changes = state.health.band_changes(now)
    worst: dict[str, tuple[int, int]] = {}
    for tenant in sorted(state.health_tenants):
        for health in state.health.snapshot(tenant, now):
            if health.merchant_id_hash is None:
                seen = worst.get(health.processor, (0, 0))
                worst[health.processor] = max(seen, (health.score, health.band.rank))
    for processor, (score, rank) in worst.items():
        state.metrics.processor_health_score.labels(processor).set(score)
        state.metrics.processor_health_band.labels(processor).set(rank)
    if not changes:
        return 0
    records = [
        NewRecord(
            tenant=change.signal.tenant,
            record_id=f"sig_{uuid.uuid4().hex}",
            key=change.signal.processor,
            payload=orjson.dumps(change.to_dict()),
        )
        for change in changes
    ]
    try:
        await state.log.append(RISK_SIGNALS, records)
    except StrongroomError as exc:
        state.logger.warning("risk_signals_publish_failed", error=exc.code)
        return 0
    state.metrics.risk_signals_published.inc(len(records))
    return len(records)


async def _publish_signals_periodically(state: GatewayState) -> None:
    while True:
        await asyncio.sleep(state.settings.processor_health_publish_seconds)
        await publish_signals(state)


async def _flush_periodically(state: GatewayState) -> None:
    while True:
        await asyncio.sleep(state.settings.usage_flush_seconds)
        await _flush(state)


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

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        # ServerErrorMiddleware answers with this, then re-raises so that the
        # request pipeline logs the failure once.
        return problem(500, "internal_error", "The request failed.", _request_id(request))

    app.add_exception_handler(Exception, on_unexpected)
    app.add_exception_handler(StrongroomError, on_strongroom_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(HTTPException, on_http_error)


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
    schema.setdefault("paths", {}).update(OPENAPI_PATHS)
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
