"""Platform administration of tenants: ``/v1/admin/tenants`` (scope ``tenants:admin``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response, StreamingResponse

from strongroom.api.dependencies import gateway, json_response, page, requires, screened_body
from strongroom.domain.access import Scope
from strongroom.domain.tenancy import TenantStatus
from strongroom.services.auth import Principal
from strongroom.services.tenants import tenant_view

router = APIRouter(tags=["admin"], dependencies=[Depends(screened_body)])

TenantRef = Annotated[str, Path(min_length=1, max_length=128)]
PlatformCaller = Annotated[Principal, Depends(requires(Scope.TENANTS_ADMIN))]


class CreateTenant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)


@router.post("/v1/admin/tenants", status_code=201, summary="Create a tenant")
async def create_tenant(
    request: Request,
    caller: PlatformCaller,
    body: CreateTenant,
) -> Response:
    tenant = await gateway(request).tenants.create(body.name, actor=caller.key_id)
    return json_response(tenant_view(tenant), status_code=201)


@router.get("/v1/admin/tenants", summary="List tenants")
async def list_tenants(
    request: Request,
    caller: PlatformCaller,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    tenants = await gateway(request).tenants.list(after=after, limit=limit)
    return page(tenants, limit, lambda t: t.id, tenant_view)


@router.get("/v1/admin/tenants/{tenant}", summary="One tenant, by id or name")
async def show_tenant(
    request: Request,
    caller: PlatformCaller,
    tenant: TenantRef,
) -> Response:
    return json_response(tenant_view(await gateway(request).tenants.get(tenant)))


async def _set_status(
    request: Request, caller: Principal, tenant: str, status: TenantStatus
) -> Response:
    state = gateway(request)
    updated = await state.tenants.set_status(tenant, status, actor=caller.key_id)
    # Cached key records carry their tenant's status; drop them so the change bites now.
    state.keys.forget()
    return json_response(tenant_view(updated))


@router.post("/v1/admin/tenants/{tenant}/suspend", summary="Suspend a tenant: its keys get 403")
async def suspend_tenant(request: Request, caller: PlatformCaller, tenant: TenantRef) -> Response:
    return await _set_status(request, caller, tenant, TenantStatus.SUSPENDED)


@router.post("/v1/admin/tenants/{tenant}/resume", summary="Resume a suspended tenant")
async def resume_tenant(request: Request, caller: PlatformCaller, tenant: TenantRef) -> Response:
    return await _set_status(request, caller, tenant, TenantStatus.ACTIVE)


@router.get("/v1/admin/tenants/{tenant}/export", summary="All of a tenant's data as JSON lines")
async def export_tenant(
    request: Request,
    caller: PlatformCaller,
    tenant: TenantRef,
) -> Response:
    lines = await gateway(request).tenants.export(tenant, actor=caller.key_id)
    return StreamingResponse(lines, media_type="application/x-ndjson")


@router.delete("/v1/admin/tenants/{tenant}", summary="Erase a tenant's data")
async def erase_tenant(
    request: Request,
    caller: PlatformCaller,
    tenant: TenantRef,
) -> Response:
    state = gateway(request)
    tombstone, erased = await state.tenants.erase(tenant, actor=caller.key_id)
    state.keys.forget()
    return json_response({**tenant_view(tombstone), "records_erased": erased})
