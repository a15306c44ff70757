"""Risk: ``/v1/transactions/evaluate``, ``/v1/decisions``, ``/v1/policy`` and
``/v1/signals/processors``.

The evaluate route is the only one here where a card number may appear, and
only in ``card.number``: it is tokenized before anything else happens and is
never stored, published or answered. Everything else on these routes is
screened for card data like any other body.

Evaluate is a hot path: like ingest, it is also a plain Starlette route
(``routes``), served ahead of FastAPI's router and its per-request dependency
machinery, which would cost more than the decision itself. The FastAPI route
of the same path runs the same handler and describes it in the OpenAPI document.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Annotated, Any, Final

import orjson
from fastapi import APIRouter, Depends, Header, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Scope as AsgiScope

from strongroom.api.dependencies import (
    gateway,
    json_response,
    principal,
    screened_body,
)
from strongroom.api.state import GatewayState
from strongroom.domain.access import Scope
from strongroom.domain.risk import DEFAULT_POLICY_TEXT, TRANSACTION, TransactionRequest
from strongroom.errors import FieldError, InvalidRequest, NotFound
from strongroom.services.auth import Principal
from strongroom.services.ingest import validation_errors
from strongroom.services.risk import MAX_SHADOW_SAMPLES, CardRef, RiskRequest
from strongroom.services.screening import screen
from strongroom.services.usage import Operation


def _caller(scope: Scope) -> Callable[[Request], Awaitable[Principal]]:
    """``requires(scope)`` as a coroutine: FastAPI runs a plain function dependency
    in its thread pool, a hand-off that costs more than the check itself."""

    async def dependency(request: Request) -> Principal:
        return principal(request, scope)

    return dependency


Evaluator = Annotated[Principal, Depends(_caller(Scope.TRANSACTIONS_EVALUATE))]
PolicyManager = Annotated[Principal, Depends(_caller(Scope.SETTINGS_MANAGE))]
SignalReader = Annotated[Principal, Depends(_caller(Scope.EVENTS_READ))]
TracePath = Annotated[str, Path(pattern=r"^trc_[0-9A-Za-z]{24}$")]

EVALUATE_PATH: Final = "/v1/transactions/evaluate"
#: The card number is expected in ``card.number`` of an evaluate body, nowhere else.
_CARD_FIELDS: Final = frozenset({"card.number"})
evaluate_router = APIRouter(tags=["risk"])
router = APIRouter(tags=["risk"], dependencies=[Depends(screened_body)])

#: Policy applications listed by ``GET /v1/policy``, newest first.
HISTORY_SHOWN: Final = 20
_IDEMPOTENCY_KEY: Final = re.compile(r"^[\x21-\x7e]{1,255}$")


def _idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not _IDEMPOTENCY_KEY.match(value):
        raise InvalidRequest(
            "The Idempotency-Key header must be 1 to 255 visible ASCII characters.",
            (FieldError("Idempotency-Key", "1 to 255 visible ASCII characters"),),
        )
    return value


def _transaction(body: bytes) -> TransactionRequest:
    try:
        return TRANSACTION.validate_json(body)
    except ValidationError as exc:
        if exc.error_count() == 1 and exc.errors()[0]["type"] in {"json_invalid", "json_type"}:
            raise InvalidRequest(
                "The request body must be a JSON object.", (FieldError("body", "invalid JSON"),)
            ) from None
        raise InvalidRequest("The transaction is invalid.", validation_errors(exc)) from None


async def _card(state: GatewayState, tenant: str, body: TransactionRequest) -> CardRef:
    """The card as risk sees it: a known token, or the number tokenized now."""
    card = body.card
    if card.token is not None:
        token = card.token

        async def describe() -> CardRef:
            stored = await state.vault.describe(tenant, token)
            return CardRef(stored.token, stored.last4, stored.brand, stored.bin6)

        try:
            known = await state.risk.known_cards.describe(
                tenant, token, state.clock.now(), describe
            )
        except NotFound:
            raise InvalidRequest(
                "The card token is not known in this tenant; tokenize the card first.",
                (FieldError("card.token", "unknown token"),),
            ) from None
        return replace(known, country=card.issuer_country)
    if card.number is None or card.exp_month is None or card.exp_year is None:
        # The model refuses this already; kept so a change there cannot reach the vault.
        raise InvalidRequest("The card needs number, exp_month and exp_year, or a token.")
    valid = state.vault.validate(card.number, card.exp_month, card.exp_year, prefix="card.")
    tokenized = await state.vault.tokenize(tenant, valid)
    return CardRef(
        tokenized.token, tokenized.last4, tokenized.brand, valid.bin6, card.issuer_country
    )


async def evaluate(request: Request) -> Response:
    """``POST /v1/transactions/evaluate``: the scope, the body screened and validated,
    the card tokenized, then the decision (answered once it is durable)."""
    state = gateway(request)
    caller = principal(request, Scope.TRANSACTIONS_EVALUATE)
    raw = await request.body()
    if raw:
        screen(raw, card_fields=_CARD_FIELDS)
    key = _idempotency_key(request.headers.get("idempotency-key"))
    body = _transaction(raw)
    card = await _card(state, caller.tenant, body)
    risk_request = RiskRequest.from_body(body, card, idempotency_key=key)
    evaluation = await state.risk.evaluate(caller.tenant, risk_request, state.clock.now())
    if not evaluation.replayed:
        state.metrics.risk_decisions.labels(evaluation.record.decision.decision).inc()
        state.usage.record(caller.tenant, Operation.EVALUATIONS, 1, len(raw))
    response = json_response(evaluation.answer())
    if evaluation.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


@evaluate_router.post(
    "/v1/transactions/evaluate",
    summary="Decide on a transaction: approve, review or decline, with the reasons",
)
async def evaluate_transaction(
    request: Request,
    caller: Evaluator,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Response:
    # The gateway serves this path through ``routes``; this route describes it
    # (scope, header) and answers the same wherever the shortcut is not in front.
    return await evaluate(request)


class _NamedRoute(Route):
    """A Starlette route that, like FastAPI's, names itself in the scope for metrics."""

    def matches(self, scope: AsgiScope) -> tuple[Match, AsgiScope]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route"] = self
        return match, child_scope


#: Served ahead of the FastAPI routers (``api.routes.FAST_ROUTES``).
routes = [_NamedRoute(EVALUATE_PATH, evaluate, methods=["POST"])]


@router.get("/v1/decisions/{trace_id}", summary="A stored decision with its (tokenized) inputs")
async def get_decision(request: Request, caller: Evaluator, trace_id: TracePath) -> Response:
    record = await gateway(request).risk.decision(caller.tenant, trace_id)
    return json_response(record.public())


@router.post(
    "/v1/decisions/{trace_id}/replay",
    summary="Re-evaluate a stored decision with its policy version; says if it reproduces",
)
async def replay_decision(request: Request, caller: Evaluator, trace_id: TracePath) -> Response:
    result = await gateway(request).risk.replay(caller.tenant, trace_id)
    return json_response(result.to_dict())


@router.get("/v1/policy", summary="The tenant's active risk policy, its source and history")
async def get_policy(request: Request, caller: PolicyManager) -> Response:
    risk = gateway(request).risk
    active = await risk.policies.get_active(caller.tenant)
    history = await risk.policies.history(caller.tenant)
    source = next(
        (applied.text for applied in reversed(history) if applied.version == active.version),
        DEFAULT_POLICY_TEXT,
    )
    return json_response(
        {
            "version": active.version,
            "default": not history,
            "source": source,
            "policy": orjson.loads(active.canonical_json()),
            "history": [applied.summary() for applied in reversed(history[-HISTORY_SHOWN:])],
        }
    )


def _policy_text(body: bytes) -> str:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest(
            "The policy must be UTF-8 text (YAML or JSON).", (FieldError("body", "not UTF-8"),)
        ) from None
    if not text.strip():
        raise InvalidRequest(
            "Send the policy as the request body (YAML or JSON).", (FieldError("body", "empty"),)
        )
    return text


@router.put(
    "/v1/policy",
    summary="Validate, version and activate a risk policy (YAML or JSON body; audited)",
)
async def put_policy(request: Request, caller: PolicyManager) -> Response:
    state = gateway(request)
    text = _policy_text(await request.body())
    previous = await state.risk.policies.get_active(caller.tenant)
    applied = await state.risk.apply_policy(
        caller.tenant, text, actor=caller.key_id, now=state.clock.now()
    )
    return json_response(
        {
            **applied.summary(),
            "previous_version": previous.version,
            "changed": previous.version != applied.version,
        }
    )


class PolicyTest(BaseModel):
    """A candidate policy and sample transactions (evaluate bodies with card tokens)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    policy: str = Field(min_length=1, max_length=1024 * 1024)
    transactions: list[dict[str, Any]] = Field(max_length=MAX_SHADOW_SAMPLES)
    #: Fresh counters fed only by the samples, instead of the live ones.
    isolated: bool = False


@router.post(
    "/v1/policy/test",
    summary="Shadow mode: the sample decisions a candidate policy would change",
)
async def test_policy(request: Request, caller: PolicyManager, body: PolicyTest) -> Response:
    state = gateway(request)
    diffs = await state.risk.shadow(
        caller.tenant,
        body.policy,
        body.transactions,
        state.clock.now(),
        isolated=body.isolated,
    )
    active = await state.risk.policies.get_active(caller.tenant)
    return json_response(
        {
            "active_version": active.version,
            "samples": len(body.transactions),
            "changed": [diff.to_dict() for diff in diffs],
        }
    )


@router.get(
    "/v1/signals/processors",
    summary="Processor-health signals: band, score and drivers per processor and merchant",
)
async def processor_signals(
    request: Request,
    caller: SignalReader,
    processor: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    state = gateway(request)
    signals = state.health.snapshot(caller.tenant, state.clock.now())
    if processor is not None:
        signals = [signal for signal in signals if signal.processor == processor]
    return json_response({"data": [signal.to_dict() for signal in signals]})
