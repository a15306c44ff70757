"""Fuzzing the API from its own OpenAPI document, and raw bodies at ``POST /v1/events``.

1. Schemathesis generates valid and invalid requests for every operation of
   ``/openapi.json`` (with a valid key); no answer is a 5xx and every 4xx is an
   RFC 9457 problem carrying the request id and the security headers.
2. Hypothesis throws random bytes, random JSON and mangled events at ``/v1/events``;
   no answer is a 5xx.

Each operation gets a bounded number of examples so the module stays well under a
minute; the app runs in process with its lifespan, on its own data directory.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from integration_support import Failures
from schemathesis import GenerationMode
from schemathesis.python import asgi as schemathesis_asgi

from strongroom.api.app import create_app
from support import AUTH, KEY, card_free_event
from support_app import make_settings

EXAMPLES_PER_OPERATION = 25
# No shrinking: a failure is reported as found, which keeps a failing run as short as a
# passing one (each 5xx also logs a full traceback).
FUZZ = settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
    phases=[Phase.explicit, Phase.generate],
)
PROBLEM_MEMBERS = ("type", "title", "status", "detail", "code", "request_id")


def _fuzz_app(data_dir: Path) -> FastAPI:
    # A key bucket this large is never exhausted by the fuzzer, so every case reaches
    # the route instead of a 429.
    return create_app(make_settings(data_dir, ratelimit_burst=1_000_000, ratelimit_rps=1e6))


# The document is built without starting the app (no lifespan, nothing opened), so the
# operations can be listed at collection time and each fuzzed as its own test.
OPENAPI = _fuzz_app(Path("unused")).openapi()
OPERATIONS = sorted(
    (method.upper(), path) for path, methods in OPENAPI["paths"].items() for method in methods
)


@pytest.fixture
def api_schema(tmp_path: Path) -> Iterator[Any]:
    # One app per test: the schemathesis plugin ends every ASGI lifespan when a test ends,
    # and the gateway's lifespan closes its store for good.
    app = _fuzz_app(tmp_path)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    try:
        yield schema
    finally:
        schemathesis_asgi.shutdown_lifespans()


def _operation(schema: Any, method: str, path: str) -> Any:
    for result in schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) == (method, path):
            return operation
    raise AssertionError(f"{method} {path} is not in the served OpenAPI document")


def check_answer(status: int, headers: Any, text: str) -> None:
    """No 5xx; every 4xx a problem with the request id; security headers always."""

    def header(name: str) -> str:
        value = headers.get(name)
        if isinstance(value, list):
            value = value[0] if value else None
        assert value is not None, f"missing {name}"
        return str(value)

    assert status < 500, f"{status}: {text[:500]}"
    assert header("x-content-type-options") == "nosniff"
    assert header("cache-control") == "no-store"
    request_id = header("x-request-id")
    if status >= 400:
        assert header("content-type").split(";")[0] == "application/problem+json", text[:300]
        body = json.loads(text)
        for member in PROBLEM_MEMBERS:
            assert member in body, f"{member} missing from {text[:300]}"
        assert body["status"] == status
        assert body["request_id"] == request_id
        for entry in body.get("errors", []):
            assert {"field", "message"} <= set(entry)


def test_the_openapi_document_covers_ingest_streams_and_operations() -> None:
    expected = {
        ("GET", "/health"),
        ("GET", "/ready"),
        ("GET", "/metrics"),
        ("POST", "/v1/events"),
        ("POST", "/v1/events/payment_exhaust"),
        ("GET", "/v1/streams/{topic}"),
        ("POST", "/v1/streams/{topic}/groups/{group}/read"),
        ("POST", "/v1/streams/{topic}/groups/{group}/ack"),
        ("GET", "/v1/streams/{topic}/dead-letters"),
        ("POST", "/v1/streams/{topic}/groups/{group}/dead-letters/replay"),
    }

    assert expected <= set(OPERATIONS)


def test_the_openapi_document_declares_bearer_auth_and_the_ingest_bodies() -> None:
    schemas = OPENAPI["components"]["schemas"]

    assert OPENAPI["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
    }
    assert {"PaymentEvent", "EventBatch", "IngestBody"} <= set(schemas)
    assert schemas["PaymentEvent"]["additionalProperties"] is False
    assert {"event_id", "event_type", "event_timestamp", "processor"} <= set(
        schemas["PaymentEvent"]["required"]
    )


def _run(operation: Any, mode: GenerationMode, **fixed: Any) -> None:
    @FUZZ
    @given(case=operation.as_strategy(mode, headers={"Authorization": f"Bearer {KEY}"}, **fixed))
    def fuzz(case: Any) -> None:
        response = case.call()
        check_answer(response.status_code, response.headers, response.text)

    fuzz()


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_generated_request_gets_a_5xx_and_every_4xx_is_a_problem(
    api_schema: Any, method: str, path: str
) -> None:
    operation = _operation(api_schema, method, path)

    _run(operation, GenerationMode.POSITIVE)
    if operation.path_parameters or operation.query or operation.body:
        _run(operation, GenerationMode.NEGATIVE)


TOPIC_OPERATIONS = [op for op in OPERATIONS if "{topic}" in op[1]]


@pytest.mark.parametrize(
    ("method", "path"), TOPIC_OPERATIONS, ids=[f"{m} {p}" for m, p in TOPIC_OPERATIONS]
)
def test_generated_requests_on_the_real_topic_never_get_a_5xx(
    api_schema: Any, method: str, path: str
) -> None:
    # Random topic names are almost always unknown (404); pinning the real topic makes
    # the generated bodies and queries reach the stream code.
    _run(
        _operation(api_schema, method, path),
        GenerationMode.POSITIVE,
        path_parameters={"topic": "payments.tokenized"},
    )


# -- raw bodies ----------------------------------------------------------------------------

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats()
    | st.text(max_size=300)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=70), inner, max_size=6)
    ),
    max_leaves=40,
)
EVENT_FIELDS = list(card_free_event())


@st.composite
def mangled_events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event with some fields replaced by arbitrary JSON and some removed."""
    body = card_free_event()
    for name in draw(st.lists(st.sampled_from(EVENT_FIELDS), max_size=4, unique=True)):
        if draw(st.booleans()):
            body[name] = draw(JSON_VALUES)
        else:
            body.pop(name)
    body.update(draw(st.dictionaries(st.text(max_size=20), JSON_VALUES, max_size=2)))
    return body


async def post_raw(
    client: httpx.AsyncClient, raw: bytes, content_type: str = "application/json"
) -> None:
    response = await client.post(
        "/v1/events", content=raw, headers={**AUTH, "Content-Type": content_type}
    )
    check_answer(response.status_code, response.headers, response.text)
    assert response.status_code in {202, 413, 415, 422}, response.text


RAW = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)


@RAW
@given(raw=st.binary(max_size=4096))
async def test_random_bytes_never_get_a_5xx(client: httpx.AsyncClient, raw: bytes) -> None:
    await post_raw(client, raw)


@RAW
@given(document=JSON_VALUES)
async def test_random_json_never_gets_a_5xx(client: httpx.AsyncClient, document: Any) -> None:
    await post_raw(client, json.dumps(document).encode())


@RAW
@given(body=mangled_events(), batch=st.booleans())
async def test_mangled_events_never_get_a_5xx(
    client: httpx.AsyncClient, body: dict[str, Any], batch: bool
) -> None:
    document = {"events": [card_free_event(), body]} if batch else body
    await post_raw(client, json.dumps(document).encode())


@RAW
@given(
    document=JSON_VALUES,
    content_type=st.sampled_from(
        ["application/json", "text/plain", "", "application/json; charset=latin-1", "*/*"]
    ),
)
async def test_random_json_with_random_content_types_never_gets_a_5xx(
    client: httpx.AsyncClient, document: Any, content_type: str
) -> None:
    await post_raw(client, json.dumps(document).encode(), content_type)


async def test_deep_nesting_never_gets_a_5xx(client: httpx.AsyncClient) -> None:
    # A long digit run (not a card number) makes the card screen parse the body too, so
    # both the screen's and the validator's depth limits are exercised.
    failures = Failures()
    for depth in (10, 63, 64, 65, 200, 1000, 100_000):
        for leaf in ("1", "4111111111111112"):
            shapes = {
                "array": "[" * depth + leaf + "]" * depth,
                "object": '{"a":' * depth + leaf + "}" * depth,
                "in-metadata": json.dumps(
                    card_free_event(metadata={"note": "PLACEHOLDER"})
                ).replace('"PLACEHOLDER"', '{"a":' * depth + leaf + "}" * depth),
            }
            for shape, raw in shapes.items():
                with failures.case(f"{shape} depth {depth} leaf {leaf}"):
                    await post_raw(client, raw.encode())
    failures.check()
