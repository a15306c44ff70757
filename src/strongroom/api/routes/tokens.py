"""The token vault: ``/v1/tokens``.

The only routes where a card number may appear in a request (``number``) or a
response (detokenize). Detokenizing has its own, stricter rate limit per key.
"""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from strongroom.api.dependencies import card_body, gateway, json_response, requires
from strongroom.domain.access import Scope
from strongroom.errors import RateLimited
from strongroom.services.auth import Principal
from strongroom.services.usage import Operation

Tokenizer = Annotated[Principal, Depends(requires(Scope.TOKENS_CREATE))]
Detokenizer = Annotated[Principal, Depends(requires(Scope.TOKENS_DETOKENIZE))]
router = APIRouter(tags=["tokens"], dependencies=[Depends(card_body("number"))])

TokenPath = Annotated[str, Path(pattern=r"^tok_[0-9A-Za-z]{24}$")]


class TokenizeCard(BaseModel):
    """A card to vault. There is no field for a security code: it is never accepted."""

    model_config = ConfigDict(extra="forbid", strict=True)

    number: str = Field(min_length=1, max_length=32)
    exp_month: int
    exp_year: int


class Detokenize(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    token: str = Field(min_length=1, max_length=64)


@router.post(
    "/v1/tokens",
    status_code=201,
    summary="Tokenize a card (201 new token, 200 the tenant's existing token for it)",
)
async def tokenize(request: Request, caller: Tokenizer, body: TokenizeCard) -> Response:
    state = gateway(request)
    card = state.vault.validate(body.number, body.exp_month, body.exp_year)
    result = await state.vault.tokenize(caller.tenant, card)
    state.usage.record(caller.tenant, Operation.TOKENIZATIONS, 1, 0)
    return json_response(result.public(), status_code=201 if result.created else 200)


@router.post("/v1/tokens/detokenize", summary="The card number behind a token (audited)")
async def detokenize(request: Request, caller: Detokenizer, body: Detokenize) -> Response:
    state = gateway(request)
    settings = state.settings
    decision = await state.limiter.hit(
        "detokenize:" + caller.key_id,
        rate=settings.detokenize_rps,
        burst=settings.detokenize_burst,
    )
    if not decision.allowed:
        state.metrics.rate_limited.labels("detokenize").inc()
        await state.audit.rate_limited("detokenize", caller.key_id, tenant=caller.tenant)
        raise RateLimited(max(1, math.ceil(decision.reset_at - state.clock.now())))
    card = await state.vault.detokenize(caller.tenant, body.token, actor=caller.key_id)
    state.usage.record(caller.tenant, Operation.DETOKENIZATIONS, 1, 0)
    return json_response(
        {
            "token": card.token,
            "number": card.number,
            "exp_month": card.exp_month,
            "exp_year": card.exp_year,
            "brand": card.brand,
        }
    )


@router.get("/v1/tokens/{token}", summary="A token's card details (never the number)")
async def describe(request: Request, caller: Tokenizer, token: TokenPath) -> Response:
    stored = await gateway(request).vault.describe(caller.tenant, token)
    return json_response(
        {
            "token": stored.token,
            "last4": stored.last4,
            "brand": stored.brand,
            "exp_month": stored.exp_month,
            "exp_year": stored.exp_year,
            "created_at": stored.created_at,
        }
    )


@router.delete("/v1/tokens/{token}", status_code=204, summary="Purge a token and its number")
async def purge(request: Request, caller: Detokenizer, token: TokenPath) -> Response:
    await gateway(request).vault.purge(caller.tenant, token, actor=caller.key_id)
    return Response(status_code=204)
