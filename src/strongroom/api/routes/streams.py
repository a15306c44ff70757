"""Reading the stream: pages by offset, consumer groups, dead letters."""

from __future__ import annotations

from typing import Annotated, Final

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from strongroom.api.dependencies import (
    MAX_INT64,
    gateway,
    json_response,
    page,
    requires,
    screened_body,
)
from strongroom.domain.access import Scope
from strongroom.domain.topics import (
    AUDIT,
    RAW,
    RISK_DECISIONS,
    RISK_SIGNALS,
    TOKENIZED,
    dead_letter_topic,
)
from strongroom.errors import NotFound
from strongroom.ports import StoredRecord
from strongroom.services.auth import Principal

StreamReader = Annotated[Principal, Depends(requires(Scope.STREAMS_READ))]
router = APIRouter(tags=["streams"], dependencies=[Depends(screened_body)])

READABLE_TOPICS: Final = frozenset(
    {TOKENIZED, dead_letter_topic(TOKENIZED), RAW, AUDIT, RISK_DECISIONS, RISK_SIGNALS}
)
GROUP_TOPICS: Final = frozenset({TOKENIZED, RAW, RISK_DECISIONS, RISK_SIGNALS})
NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"

TopicName = Annotated[str, Path(max_length=128)]
GroupName = Annotated[str, Path(pattern=NAME_PATTERN)]


class GroupReadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    consumer: str = Field(default="default", pattern=NAME_PATTERN)
    limit: int = Field(default=100, ge=1, le=1000)
    visibility_timeout_seconds: float | None = Field(default=None, gt=0, le=43_200)


class AckRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    offsets: list[Annotated[int, Field(ge=0, le=MAX_INT64)]] = Field(min_length=1, max_length=1000)


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dead_letter_offsets: list[Annotated[int, Field(ge=0, le=MAX_INT64)]] | None = Field(
        default=None, max_length=1000
    )


def record_view(record: StoredRecord) -> dict[str, object]:
    """The public shape of a record: its place in the log and the record itself."""
    return {
        "topic": record.topic,
        "offset": record.offset,
        "key": record.key,
        "appended_at": record.appended_at,
        "record": orjson.Fragment(record.payload),
    }


def _known(topic: str, topics: frozenset[str]) -> str:
    if topic not in topics:
        # The name is not echoed: it is caller input and could carry anything.
        raise NotFound("There is no such topic.")
    return topic


@router.get("/v1/streams/{topic}", summary="Read a topic in offset order")
async def read_topic(
    request: Request,
    caller: StreamReader,
    topic: TopicName,
    after: Annotated[int | None, Query(ge=-1, le=MAX_INT64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    records = await gateway(request).log.read(
        _known(topic, READABLE_TOPICS), tenant=caller.tenant, after=after, limit=limit
    )
    return page(records, limit, lambda r: r.offset, record_view)


@router.post(
    "/v1/streams/{topic}/groups/{group}/read",
    summary="Deliver records to a consumer-group member (at least once)",
)
async def group_read(
    request: Request,
    caller: StreamReader,
    topic: TopicName,
    group: GroupName,
    body: GroupReadRequest,
) -> Response:
    state = gateway(request)
    settings = state.settings
    deliveries = await state.log.group_read(
        _known(topic, GROUP_TOPICS),
        group,
        tenant=caller.tenant,
        consumer=body.consumer,
        limit=body.limit,
        visibility_timeout=body.visibility_timeout_seconds
        or settings.consumer_visibility_timeout_seconds,
        max_deliveries=settings.consumer_max_deliveries,
    )
    return json_response(
        {"data": [{**record_view(d.record), "deliveries": d.deliveries} for d in deliveries]}
    )


@router.post("/v1/streams/{topic}/groups/{group}/ack", summary="Acknowledge delivered records")
async def group_ack(
    request: Request,
    caller: StreamReader,
    topic: TopicName,
    group: GroupName,
    body: AckRequest,
) -> Response:
    settled = await gateway(request).log.group_ack(
        _known(topic, GROUP_TOPICS), group, tenant=caller.tenant, offsets=body.offsets
    )
    return json_response({"acknowledged": settled})


@router.get("/v1/streams/{topic}/dead-letters", summary="List a topic's dead letters")
async def list_dead_letters(
    request: Request,
    caller: StreamReader,
    topic: TopicName,
    group: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    letters = await gateway(request).log.dead_letters(
        _known(topic, GROUP_TOPICS), tenant=caller.tenant, group=group, limit=limit
    )
    return json_response(
        {
            "data": [
                {
                    "dead_letter_offset": d.dead_letter_offset,
                    "topic": d.topic,
                    "group": d.group,
                    "offset": d.offset,
                    "deliveries": d.deliveries,
                    "dead_at": d.dead_at,
                    "replayed": d.replayed,
                }
                for d in letters
            ]
        }
    )


@router.post(
    "/v1/streams/{topic}/groups/{group}/dead-letters/replay",
    summary="Make a group's dead letters deliverable again",
)
async def replay_dead_letters(
    request: Request,
    caller: StreamReader,
    topic: TopicName,
    group: GroupName,
    body: ReplayRequest,
) -> Response:
    state = gateway(request)
    replayed = await state.log.replay_dead_letters(
        _known(topic, GROUP_TOPICS),
        tenant=caller.tenant,
        group=group,
        dead_letter_offsets=body.dead_letter_offsets,
    )
    await state.audit.record(
        "stream.dead_letters_replayed", actor=caller.key_id, tenant=caller.tenant,
        resource=f"{topic}/{group}", details={"replayed": replayed},
    )  # fmt: skip
    return json_response({"replayed": replayed})
