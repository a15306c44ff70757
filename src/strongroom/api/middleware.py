"""Pure-ASGI middleware: request context, body limits, authentication and rate limits.

Outermost to innermost:

They run outside FastAPI's own stack (see ``app.GatewayApp``), and the last
one, ``Shortcut``, answers the ingest routes itself.

1. ``RequestContext``: request id, security headers on every response (errors
   included), the access log line, request metrics, and a problem+json 500
   if anything below raises.
2. ``UrlScreening``: 422 ``pan_detected`` for a card number in the path or
   query, before any route, log line or store sees it.
3. ``BodyLimit``: 413 before reading when Content-Length is over the limit,
   and while reading when a chunked body grows past it.
4. ``Authentication``: on ``/v1/`` paths, the bearer key, the per-IP limit
   for failed attempts, the per-key and per-tenant limits and the
   X-RateLimit headers.
5. ``Shortcut``: the ingest routes, served without the framework's layers.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from starlette.datastructures import State
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from strongroom.api.problems import problem, problem_for
from strongroom.domain.cards import contains_pan
from strongroom.errors import (
    AuthenticationFailed,
    CardDataRefused,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    StrongroomError,
)
from strongroom.services.audit import Origin, current_origin
from strongroom.services.auth import presented_key_id
from strongroom.services.screening import screen_url

if TYPE_CHECKING:
    from strongroom.api.state import GatewayState
    from strongroom.observability.metrics import Metrics

SECURITY_HEADERS: Final = [
    (b"strict-transport-security", b"max-age=63072000; includeSubDomains"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"cache-control", b"no-store"),
]
_REQUEST_ID: Final = re.compile(r"^[A-Za-z0-9._:-]{8,64}$")
_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_INGEST_PREFIX: Final = "/v1/events"
#: Where ``RequestContext`` keeps the headers it adds to the response start.
RESPONSE_HEADERS: Final = "response_headers"


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of header ``name`` (lowercase), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def client_ip(scope: Scope) -> str:
    # The socket peer only: no client-supplied header (X-Forwarded-For) may
    # change which rate-limit bucket a request lands in.
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


# Request ids need to be unique, not secret: a random per-process prefix and a
# counter cost far less than a UUID (an entropy syscall) per request. The "r"
# between them keeps any digit run to 12, so an id never looks like a card number.
class _RequestIds:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.prefix = os.urandom(6).hex() + "r"
        self.counter = itertools.count(1)

    def next(self) -> str:
        return f"{self.prefix}{next(self.counter):012x}"


_IDS: Final = _RequestIds()
# A process forked after import (a preforking server, a fork server) would
# otherwise hand out the same ids as its parent and its siblings.
os.register_at_fork(after_in_child=_IDS.reset)


def _request_id(scope: Scope) -> str:
    offered = header(scope, b"x-request-id")
    if offered and _REQUEST_ID.match(offered) and not contains_pan(offered):
        return offered
    return _IDS.next()


class RequestContext:
    def __init__(self, app: ASGIApp, metrics: Metrics, logger: Any, access_log: bool) -> None:
        self.app = app
        self.metrics = metrics
        self.logger = logger
        self.access_log = access_log
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def _series(self, template: str, method: str, status: int) -> tuple[Any, Any]:
        # Looking up labelled children costs a lock and a tuple hash each time;
        # routes x methods x statuses is small, so keep their bound methods.
        key = (template, method, status)
        series = self._children.get(key)
        if series is None:
            series = (
                self.metrics.request_duration.labels(template, method).observe,
                self.metrics.requests.labels(template, method, str(status)).inc,
            )
            self._children[key] = series
        return series

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started_at = time.perf_counter()
        request_id = _request_id(scope)
        request_state = scope.setdefault("state", {})
        request_state["request_id"] = request_id
        current_origin.set(Origin(client_ip(scope), request_id))
        response: dict[str, Any] = {"status": 500, "started": False}
        # Inner layers add theirs here (the rate-limit headers), so every
        # response start passes through one wrapper, not one per layer.
        extra_headers = [*SECURITY_HEADERS, (b"x-request-id", request_id.encode())]
        request_state[RESPONSE_HEADERS] = extra_headers

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                response["status"] = message["status"]
                response["started"] = True
                message["headers"] = [*message.get("headers", ()), *extra_headers]
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            self.logger.exception("request_failed", request_id=request_id)
            if not response["started"]:
                failure = problem(500, "internal_error", "The request failed.", request_id)
                await failure(scope, receive, send_with_headers)
        finally:
            self._record(scope, request_state, response["status"], started_at, request_id)

    def _record(
        self, scope: Scope, request_state: dict[str, Any], status: int, started_at: float,
        request_id: str,
    ) -> None:  # fmt: skip
        duration = time.perf_counter() - started_at
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        method = scope["method"]
        observe, count = self._series(template, method, status)
        observe(duration)
        count()
        if self.access_log:
            principal = request_state.get("principal")
            self.logger.info(
                "request",
                method=method,
                route=template,
                status=status,
                duration_ms=round(duration * 1000, 3),
                request_id=request_id,
                key_id=principal.key_id if principal else None,
            )


class UrlScreening:
    """Refuses a card number in the path or query before anything stores or logs them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            try:
                screen_url(scope["path"], scope.get("query_string", b""))
            except CardDataRefused as refusal:
                await _refuse(refusal, scope["state"]["request_id"], scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyLimit:
    """413 for bodies over the limit, before any route reads them.

    The body is read here, at most ``limit`` bytes of it, and replayed to the
    app; a route never sees an oversized body, and the answer is the same 413
    whether the size was declared or discovered while reading.
    """

    def __init__(self, app: ASGIApp, limit: int, metrics: Metrics) -> None:
        self.app = app
        self.limit = limit
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        declared = header(scope, b"content-length")
        too_big = declared is not None and (not declared.isdigit() or int(declared) > self.limit)
        chunks: list[bytes] = []
        size = 0
        more = not too_big
        while more:
            message = await receive()
            if message["type"] != "http.request":
                # The client went away; let the app see the disconnect as it would.
                await self.app(scope, _replay([message], receive), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                too_big = True
                break
            chunks.append(chunk)
            more = message.get("more_body", False)
        if too_big:
            if scope["path"].startswith(_INGEST_PREFIX):
                self.metrics.events_rejected.labels("payload_too_large").inc()
            refusal = PayloadTooLarge(f"The request body is over {self.limit} bytes.")
            await _refuse(refusal, scope["state"]["request_id"], scope, receive, send)
            return
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([body], receive), send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A receive that hands out ``messages`` first, then defers to the real one."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


class Authentication:
    #: Sources over their failed-attempt budget, with when it resets; bounded.
    MAX_BLOCKED: Final = 100_000

    def __init__(self, app: ASGIApp, holder: State) -> None:
        self.app = app
        self.holder = holder
        self._blocked: dict[str, float] = {}

    def _remember_block(self, ip: str, until: float) -> None:
        if len(self._blocked) >= self.MAX_BLOCKED:
            now = time.time()
            self._blocked = {k: v for k, v in self._blocked.items() if v > now}
        self._blocked[ip] = until

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        state: GatewayState = self.holder.gateway
        settings = state.settings
        request_id = scope["state"]["request_id"]
        ip = client_ip(scope)
        blocked_until = self._blocked.get(ip)
        if blocked_until is not None:
            if blocked_until > time.time():
                # A source over its failed-attempt budget is not even checked, so a
                # guesser cannot keep testing keys by ignoring the 429s.
                state.metrics.rate_limited.labels("ip").inc()
                await state.audit.rate_limited("ip", ip, tenant=None)
                blocked = RateLimited(_retry_after(blocked_until))
                await _refuse(blocked, request_id, scope, receive, send)
                return
            del self._blocked[ip]
        authorization = header(scope, b"authorization")
        try:
            principal = await state.keys.authenticate(authorization)
        except AuthenticationFailed as failure:
            state.metrics.auth_denied.labels(failure.reason).inc()
            state.logger.warning("auth_denied", reason=failure.reason, ip=ip, request_id=request_id)
            await state.audit.record(
                "key.used_expired" if failure.reason == "expired" else "auth.failed",
                actor=presented_key_id(authorization) or "anonymous",
                outcome="failure",
                details={"reason": failure.reason},
            )
            ip_state = await state.limiter.hit(
                "ip:" + ip, rate=settings.ip_ratelimit_rps, burst=settings.ip_ratelimit_burst
            )
            refusal: StrongroomError = failure
            if not ip_state.allowed:
                state.metrics.rate_limited.labels("ip").inc()
                self._remember_block(ip, ip_state.reset_at)
                refusal = RateLimited(_retry_after(ip_state.reset_at))
            await _refuse(refusal, request_id, scope, receive, send)
            return
        except PermissionDenied as denied:
            state.metrics.auth_denied.labels(denied.code).inc()
            await state.audit.record(
                "auth.denied",
                actor=presented_key_id(authorization) or "anonymous",
                outcome="failure",
                details={"reason": denied.code},
            )
            await _refuse(denied, request_id, scope, receive, send)
            return
        except StrongroomError as failure:
            await _refuse(failure, request_id, scope, receive, send)
            return
        scope["state"]["principal"] = principal
        rate, burst = principal.rate_limit or (settings.ratelimit_rps, settings.ratelimit_burst)
        decision = await state.limiter.hit("key:" + principal.key_id, rate=rate, burst=burst)
        tenant_bucket = "tenant:" + principal.tenant
        tenant_rate, tenant_burst = settings.tenant_ratelimit_rps, settings.tenant_ratelimit_burst
        tenant_decision = None
        if decision.allowed and not await state.limiter.consume(
            tenant_bucket, rate=tenant_rate, burst=tenant_burst
        ):
            tenant_decision = await state.limiter.peek(
                tenant_bucket, rate=tenant_rate, burst=tenant_burst
            )
        scope["state"][RESPONSE_HEADERS].extend(
            (
                (b"x-ratelimit-limit", str(decision.limit).encode()),
                (b"x-ratelimit-remaining", str(decision.remaining).encode()),
                (b"x-ratelimit-reset", str(math.ceil(decision.reset_at)).encode()),
            )
        )
        for kind, verdict in (("key", decision), ("tenant", tenant_decision)):
            if verdict is not None and not verdict.allowed:
                state.metrics.rate_limited.labels(kind).inc()
                await state.audit.rate_limited(kind, principal.key_id, tenant=principal.tenant)
                throttled = RateLimited(_retry_after(verdict.reset_at))
                await _refuse(throttled, request_id, scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _refuse(
    error: StrongroomError, request_id: str, scope: Scope, receive: Receive, send: Send
) -> None:
    await problem_for(error, request_id)(scope, receive, send)


class Shortcut:
    """Serves the ingest routes directly, without FastAPI's inner middleware and router.

    Ingest is the hot path: the framework's exception, exit-stack and routing layers
    cost more than the work itself. The same route endpoints answer either way
    (the ingest routes' are plain ASGI apps, called as such); other methods on
    these paths (405) and every other path go to FastAPI.
    """

    def __init__(self, app: ASGIApp, routes: Sequence[Route]) -> None:
        self.app = app
        self.routes = {route.path: route for route in routes}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.routes.get(scope["path"]) if scope["type"] == "http" else None
        if route is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        scope["route"] = route
        try:
            if route.app is route.endpoint:
                # An ASGI endpoint (the ingest routes): it answers by itself.
                await route.app(scope, receive, send)
                return
            response = await route.endpoint(Request(scope, receive))
        except StrongroomError as refusal:
            response = problem_for(refusal, scope["state"]["request_id"])
        await response(scope, receive, send)


def _retry_after(reset_at: float) -> int:
    return max(1, math.ceil(reset_at - time.time()))
