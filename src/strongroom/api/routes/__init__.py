"""HTTP routes, one module per resource."""

from __future__ import annotations

from strongroom.api.routes import (
    admin,
    audit,
    events,
    keys,
    operations,
    risk,
    settings,
    streams,
    tokens,
    usage,
)

ROUTERS = (
    operations.router,
    streams.router,
    keys.router,
    usage.router,
    admin.router,
    audit.router,
    tokens.router,
    settings.router,
    risk.evaluate_router,
    risk.router,
)

#: Plain Starlette routes served before the FastAPI routers (the ingest and evaluate hot paths).
FAST_ROUTES = [*events.routes, *risk.routes]
