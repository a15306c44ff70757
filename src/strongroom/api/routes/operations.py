"""Liveness, readiness and metrics: unauthenticated, detail-free."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from typing import Final

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from strongroom.api.dependencies import gateway, json_response
from strongroom.api.state import GatewayState
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


async def _export_stream_state(state: GatewayState) -> None:
    state.metrics.log_length.labels(TOKENIZED).set(await state.log.length(TOKENIZED))
    totals: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for group in await state.log.group_states():
        total = totals[(group.topic, group.group)]
        total[0] += group.lag
        total[1] += group.pending
        total[2] += group.dead_letters
    metrics = state.metrics
    gauges = (metrics.consumer_lag, metrics.consumer_pending, metrics.dead_letters)
    for gauge in gauges:
        gauge.clear()  # groups of an erased tenant vanish from the export
    for labels, values in totals.items():
        for gauge, value in zip(gauges, values, strict=True):
            gauge.labels(*labels).set(value)


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    state = gateway(request)
    # A scrape must still answer when the store is down; the gauge keeps its last value.
    with contextlib.suppress(StrongroomError, TimeoutError):
        await asyncio.wait_for(_export_stream_state(state), READY_TIMEOUT_SECONDS)
    queued = getattr(state.log, "queued_events", None)
    if queued is not None:
        state.metrics.writer_queue.set(queued)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
