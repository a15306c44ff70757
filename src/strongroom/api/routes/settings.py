"""The caller's tenant settings and transaction-signing secret: ``/v1/settings``."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from strongroom.api.dependencies import gateway, json_response, requires, screened_body
from strongroom.domain.access import Scope
from strongroom.services.auth import Principal
from strongroom.services.tenant_settings import SettingsChange

SettingsManager = Annotated[Principal, Depends(requires(Scope.SETTINGS_MANAGE))]
router = APIRouter(tags=["settings"], dependencies=[Depends(screened_body)])


@router.get("/v1/settings", summary="The tenant's settings")
async def get_settings(request: Request, caller: SettingsManager) -> Response:
    return json_response(asdict(await gateway(request).tenant_settings.get(caller.tenant)))


@router.patch("/v1/settings", summary="Change the tenant's settings (audited)")
async def change_settings(
    request: Request, caller: SettingsManager, body: SettingsChange
) -> Response:
    updated = await gateway(request).tenant_settings.update(
        caller.tenant, body, actor=caller.key_id
    )
    return json_response(asdict(updated))


@router.post(
    "/v1/settings/signing-secret",
    status_code=201,
    summary="Create or replace the transaction-signing secret (shown once)",
)
async def create_signing_secret(request: Request, caller: SettingsManager) -> Response:
    secret = await gateway(request).signing.create_secret(caller.tenant, actor=caller.key_id)
    return json_response({"signing_secret": secret}, status_code=201)
