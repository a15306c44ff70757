"""The ceiling for the ingest benchmarks: a bare Starlette endpoint.

It does the least an ingest endpoint can do on the same stack (uvicorn, uvloop,
httptools, one worker, no access log): read the whole body and answer 202 with
a tiny JSON body. The gateway's single-event figures are reported as a ratio of
this one, so the number says how much the gateway's own work costs, on this
machine, independent of how fast the machine is.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

_ACK = b'{"accepted":true}'


async def ingest(request: Request) -> Response:
    """Await the body, as the gateway must, then acknowledge."""
    await request.body()
    return Response(_ACK, status_code=202, media_type="application/json")


app = Starlette(routes=[Route("/v1/events", ingest, methods=["POST"])])
