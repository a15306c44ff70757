"""``strongroom serve``: run the gateway."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
from collections.abc import Iterator
from typing import Annotated, Final

import typer
import uvicorn

from strongroom.api.app import create_app
from strongroom.api.http_protocol import CoalescingHttpProtocol
from strongroom.api.state import GatewayState
from strongroom.cli.common import DataDirOption, settings_or_exit, with_gateway
from strongroom.errors import Conflict
from strongroom.observability.logging import configure_logging, flush_logs
from strongroom.services.bootstrap import initialise, is_initialised
from strongroom.services.keys import IssuedKey

DRAIN_SECONDS: Final = 1.0
DRAIN_QUIET_SECONDS: Final = 0.25
#: Allocations between young-generation collections (CPython's default is 700).
YOUNG_COLLECTION_THRESHOLD: Final = 100_000


async def _bootstrap(state: GatewayState) -> IssuedKey | None:
    """On a fresh install with no configured keys, create the platform admin key."""
    if len(state.keys.configured) or await is_initialised(state.store.keys):
        return None
    try:
        return await initialise(state.tenants, state.keys, state.store.keys, tenant_name="default")
    except Conflict:
        # Another process initialised the install first.
        return None


def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind (default 8080).")] = None,
    data_dir: DataDirOption = None,
    migrate: Annotated[
        bool, typer.Option("--migrate", help="Upgrade an out-of-date database schema first.")
    ] = False,
) -> None:
    """Start the gateway: API, /health, /ready and /metrics on one port."""
    settings = settings_or_exit(host=host, port=port, data_dir=data_dir)
    configure_logging(settings.log_level)
    issued = with_gateway(settings, _bootstrap, migrate=migrate)
    if issued is not None:
        # Shown once, on the terminal only: the store keeps just its keyed hash.
        typer.echo(
            "No API key is configured: initialised this install with a platform admin key.\n"
            f"It is shown once:\n  {issued.secret}\n"
            "Keep it safe; create narrower keys with it (see README)."
        )
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        # One write per response instead of two (strongroom.api.http_protocol).
        http=CoalescingHttpProtocol,
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=int(settings.shutdown_timeout_seconds),
        backlog=4096,
        # X-Forwarded-For names the client only when it comes from a proxy the
        # operator trusts; otherwise any caller could choose the address its
        # per-IP limit is counted under.
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=list(settings.trusted_proxies) or None,
    )
    try:
        _Server(config).run()
    finally:
        # The last lines (gateway_stopped) must be out before the process ends,
        # however it ends.
        flush_logs()


def settle_heap() -> None:
    """Set aside everything the process built to start (modules, app, stores)
    from the cycle collector.

    Those objects live as long as the process, yet every full collection scans
    them all: about 140,000 of them, which made each generation-2 collection a
    pause of 60-80 ms on the request path, several times a minute under load.
    Frozen, they are never scanned again, and a full collection covers only
    what requests created since.

    Young collections are also made rarer. Each one walks every young object
    still alive, and under load that is mostly the objects of requests in
    flight: at the default threshold of 700 allocations, 64 concurrent
    requests meant a young collection every 27 requests, each walking the same
    in-flight objects again, about 6 µs per request in all. Batches of 100
    events keep a hundred times more in flight: at 10,000 allocations the
    collector took about a sixth of the event loop's time at 64 connections.
    What waits longer is only garbage in reference cycles, at most a hundred
    thousand objects of it; everything else is still freed the moment its last
    reference goes.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, older, oldest)


class _Server(uvicorn.Server):
    """uvicorn's server, exiting 0 after a graceful shutdown on SIGTERM or SIGINT.

    uvicorn re-raises the signal it caught once it has shut down, so the process
    would die by that signal after finishing cleanly; supervisors then report a
    failure. The shutdown is complete at that point, so the exit is a success.
    """

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        settle_heap()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            yield
            self._captured_signals.clear()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Drain before closing: answer requests already sent, then stop.

        uvicorn closes its listeners first, which resets connections the kernel
        accepted but the server had not yet, and requests already on idle
        keep-alive connections. Serving on until no new request arrived for a
        quarter second (at most ``DRAIN_SECONDS``), with /ready answering 503
        meanwhile, lets load balancers move away and those requests complete.
        """
        gateway = getattr(self.config.app, "state", None)
        state = getattr(gateway, "gateway", None)
        if state is not None:
            state.draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_SECONDS
        seen = -1
        while loop.time() < deadline and self.server_state.total_requests != seen:
            seen = self.server_state.total_requests
            await asyncio.sleep(DRAIN_QUIET_SECONDS)
        await super().shutdown(sockets)
