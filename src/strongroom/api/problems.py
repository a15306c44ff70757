"""RFC 9457 problem details: the only shape an error response takes.

Client-facing details are short and leak nothing: no input values, no stack
traces, no internal names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import orjson
from starlette.responses import Response

from strongroom.errors import (
    AuthenticationFailed,
    FieldError,
    PermissionDenied,
    RateLimited,
    RequestRejected,
    ServiceUnavailable,
    StrongroomError,
)

PROBLEM_CONTENT_TYPE: Final = "application/problem+json"
PROBLEM_BASE: Final = "https://strongroom.dev/problems/"

_TITLES: Final[dict[int, str]] = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}


def problem_body(
    status: int,
    code: str,
    detail: str,
    request_id: str,
    errors: Sequence[FieldError] = (),
) -> bytes:
    body: dict[str, object] = {
        "type": PROBLEM_BASE + code,
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "code": code,
        "request_id": request_id,
    }
    if errors:
        body["errors"] = [{"field": e.field, "message": e.message} for e in errors]
    return orjson.dumps(body)


def problem(
    status: int,
    code: str,
    detail: str,
    request_id: str,
    *,
    errors: Sequence[FieldError] = (),
    headers: Mapping[str, str] | None = None,
) -> Response:
    return Response(
        problem_body(status, code, detail, request_id, errors),
        status_code=status,
        media_type=PROBLEM_CONTENT_TYPE,
        headers=dict(headers or {}),
    )


def status_for(exc: StrongroomError) -> int:
    if isinstance(exc, RequestRejected):
        return exc.status
    if isinstance(exc, AuthenticationFailed):
        return 401
    if isinstance(exc, PermissionDenied):
        return 403
    if isinstance(exc, RateLimited):
        return 429
    if isinstance(exc, ServiceUnavailable):
        return 503
    return 500


def problem_for(exc: StrongroomError, request_id: str) -> Response:
    """The problem response for a Strongroom error, with the headers its status needs."""
    status = status_for(exc)
    headers: dict[str, str] = {}
    errors: tuple[FieldError, ...] = ()
    if isinstance(exc, RequestRejected):
        detail, errors = exc.detail, exc.errors
    elif isinstance(exc, AuthenticationFailed):
        detail = str(exc)
        headers["WWW-Authenticate"] = 'Bearer realm="strongroom"'
    elif isinstance(exc, RateLimited):
        detail = str(exc)
        headers["Retry-After"] = str(exc.retry_after)
    elif isinstance(exc, ServiceUnavailable):
        detail = "The service cannot take this request right now; nothing was stored. Retry later."
        headers["Retry-After"] = str(exc.retry_after)
    elif isinstance(exc, PermissionDenied):
        detail = exc.detail
    else:
        detail = "The request failed."
    return problem(status, exc.code, detail, request_id, errors=errors, headers=headers)
