"""HTTP routes, one module per resource."""

from __future__ import annotations

from strongroom.api.routes import admin, events, keys, operations, streams, usage

ROUTERS = (
    operations.router,
    events.router,
    streams.router,
    keys.router,
    usage.router,
    admin.router,
)
