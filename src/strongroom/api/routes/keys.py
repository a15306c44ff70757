"""Managed API keys of the caller's tenant: ``/v1/keys``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator
from starlette.responses import Response

from strongroom.api.dependencies import gateway, json_response, page, requires, screened_body
from strongroom.domain.access import Role, Scope, parse_scopes
from strongroom.errors import InvalidRequest
from strongroom.services.auth import Principal
from strongroom.services.keys import DEFAULT_GRACE_SECONDS, IssuedKey
from strongroom.services.tenants import key_view

KeyManager = Annotated[Principal, Depends(requires(Scope.KEYS_MANAGE))]
router = APIRouter(tags=["keys"], dependencies=[Depends(screened_body)])

KeyId = Annotated[str, Path(pattern=r"^key_[0-9A-Za-z]{12}$")]


class CreateKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    role: Role
    scopes: list[str] | None = Field(default=None, max_length=32)
    expires_at: AwareDatetime | None = None
    mode: str = Field(default="live", pattern="^(live|test)$")
    rate_limit_rps: float | None = Field(default=None, gt=0, le=1_000_000)
    rate_limit_burst: int | None = Field(default=None, ge=1, le=10_000_000)

    @model_validator(mode="after")
    def _limit_pair(self) -> CreateKey:
        if (self.rate_limit_rps is None) != (self.rate_limit_burst is None):
            raise ValueError("set rate_limit_rps and rate_limit_burst together, or neither")
        return self


class RotateKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_period_seconds: int = Field(default=DEFAULT_GRACE_SECONDS, ge=0, le=30 * 24 * 3600)


def issued_view(issued: IssuedKey) -> dict[str, object]:
    """The one response that carries a secret: shown once, never stored."""
    return {**key_view(issued.record), "key": issued.secret}


def _timestamp(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


@router.post("/v1/keys", status_code=201, summary="Create an API key (the secret is shown once)")
async def create_key(
    request: Request,
    caller: KeyManager,
    body: CreateKey,
) -> Response:
    try:
        scopes = None if body.scopes is None else parse_scopes(body.scopes)
    except ValueError as exc:
        raise InvalidRequest(f"Invalid scopes: {exc}.") from None
    issued = await gateway(request).keys.create(
        tenant_id=caller.tenant,
        name=body.name,
        role=body.role,
        scopes=scopes,
        expires_at=_timestamp(body.expires_at),
        granted_by=caller,
        mode="test" if body.mode == "test" else "live",
        rate_limit=(body.rate_limit_rps, body.rate_limit_burst),
    )
    return json_response(issued_view(issued), status_code=201)


@router.get("/v1/keys", summary="List the tenant's API keys (never secrets)")
async def list_keys(
    request: Request,
    caller: KeyManager,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    records = await gateway(request).keys.list(caller.tenant, after=after, limit=limit)
    return page(records, limit, lambda r: r.id, key_view)


@router.get("/v1/keys/{key_id}", summary="One API key (never its secret)")
async def get_key(
    request: Request,
    caller: KeyManager,
    key_id: KeyId,
) -> Response:
    return json_response(key_view(await gateway(request).keys.get(caller.tenant, key_id)))


@router.post(
    "/v1/keys/{key_id}/rotate",
    status_code=201,
    summary="Replace a key; the old one works until its grace period ends",
)
async def rotate_key(
    request: Request,
    caller: KeyManager,
    key_id: KeyId,
    body: RotateKey | None = None,
) -> Response:
    grace = (body or RotateKey()).grace_period_seconds
    issued = await gateway(request).keys.rotate(
        caller.tenant, key_id, grace_seconds=grace, granted_by=caller
    )
    return json_response(issued_view(issued), status_code=201)


@router.delete("/v1/keys/{key_id}", status_code=204, summary="Revoke a key at once")
async def revoke_key(
    request: Request,
    caller: KeyManager,
    key_id: KeyId,
) -> Response:
    await gateway(request).keys.revoke(caller.tenant, key_id, revoked_by=caller)
    return Response(status_code=204)
