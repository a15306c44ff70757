"""Liveness, readiness and metrics: unauthenticated, detail-free."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from strongroom.api.dependencies import gateway, json_response
from strongroom.domain.topics import TOKENIZED
from strongroom.errors import ServiceUnavailable, StorageUnavailable, StrongroomError

router = APIRouter(tags=["operations"])

READY_TIMEOUT_SECONDS: Final = 2.0


@router.get("/health", summary="Liveness: the process answers")
async def health() -> Response:
    return json_response({"status": "ok"})


@router.get("/ready", summary="Readiness: the store takes writes")
async def ready(request: Request) -> Response:
    if gateway(request).draining:
        raise ServiceUnavailable("The gateway is shutting down.")
    try:
        await asyncio.wait_for(gateway(request).log.check_writable(), READY_TIMEOUT_SECONDS)
    except (StrongroomError, TimeoutError) as exc:
        raise StorageUnavailable("The store is not writable.") from exc
    return json_response({"status": "ready"})


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    state = gateway(request)
    # A scrape must still answer when the store is down; the gauge keeps its last value.
    with contextlib.suppress(StrongroomError):
        state.metrics.log_length.labels(TOKENIZED).set(await state.log.length(TOKENIZED))
    queued = getattr(state.log, "queued_events", None)
    if queued is not None:
        state.metrics.writer_queue.set(queued)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
