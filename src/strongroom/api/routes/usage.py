"""Per-tenant usage: ``GET /v1/usage``."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from strongroom.api.dependencies import gateway, json_response, requires
from strongroom.domain.access import Scope
from strongroom.errors import InvalidRequest
from strongroom.services.auth import Principal

UsageReader = Annotated[Principal, Depends(requires(Scope.USAGE_READ))]
router = APIRouter(tags=["usage"])

MAX_DAYS = 400


@router.get("/v1/usage", summary="Usage of the caller's tenant per day and operation")
async def usage(
    request: Request,
    caller: UsageReader,
    first: Annotated[date | None, Query(alias="from")] = None,
    last: Annotated[date | None, Query(alias="to")] = None,
) -> Response:
    today = datetime.now(UTC).date()
    last = last or today
    first = first or last.replace(day=1)
    if first > last:
        raise InvalidRequest("'from' must not be after 'to'.")
    if (last - first).days > MAX_DAYS:
        raise InvalidRequest(f"Ask for at most {MAX_DAYS} days at a time.")
    rows = await gateway(request).usage.query(caller.tenant, first.isoformat(), last.isoformat())
    return json_response(
        {
            "tenant": caller.tenant,
            "from": first.isoformat(),
            "to": last.isoformat(),
            "data": [
                {"day": r.day, "operation": r.operation, "count": r.count, "bytes": r.bytes}
                for r in rows
            ],
        }
    )
