"""Checks for RFC 9457 problem responses (``application/problem+json``)."""

from __future__ import annotations

from typing import Any, Final

import httpx

PROBLEM_JSON: Final = "application/problem+json"
PROBLEM_FIELDS: Final = ("type", "title", "status", "detail", "code", "request_id")


def assert_problem(
    response: httpx.Response, status: int | None = None, code: str | None = None
) -> dict[str, Any]:
    """The response is an RFC 9457 problem with every member the design promises, never a
    500: status ``status`` (any 4xx if None) and, if given, code ``code``."""
    assert response.status_code < 500, response.text
    if status is None:
        assert 400 <= response.status_code < 500, response.text
    else:
        assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == PROBLEM_JSON, response.headers
    body: dict[str, Any] = response.json()
    for member in PROBLEM_FIELDS:
        assert member in body, f"problem body lacks {member!r}: {body}"
    assert body["status"] == response.status_code
    assert body["type"].endswith("/" + body["code"])
    assert isinstance(body["title"], str)
    assert body["title"]
    assert isinstance(body["detail"], str)
    assert body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]
    if code is not None:
        assert body["code"] == code, body
    for entry in body.get("errors", []):
        assert set(entry) >= {"field", "message"}, entry
        assert isinstance(entry["field"], str)
        assert entry["field"]
        assert isinstance(entry["message"], str)
        assert entry["message"]
    return body
