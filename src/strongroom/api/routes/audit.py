"""The audit trail over HTTP: query, latest signed checkpoint, inclusion and consistency proofs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from strongroom.api.dependencies import MAX_INT64, gateway, json_response, page, requires
from strongroom.domain.access import Scope
from strongroom.errors import NotFound
from strongroom.ports import AuditQuery
from strongroom.services.auth import Principal

AuditReader = Annotated[Principal, Depends(requires(Scope.AUDIT_READ))]
router = APIRouter(tags=["audit"])

NAME: Final = r"^[A-Za-z0-9._:-]{1,64}$"


@router.get("/v1/audit", summary="Audit records of the caller's tenant (all, for the platform)")
async def list_audit(
    request: Request,
    caller: AuditReader,
    actor: Annotated[str | None, Query(pattern=NAME)] = None,
    action: Annotated[str | None, Query(pattern=NAME)] = None,
    since: Annotated[datetime | None, Query(alias="from")] = None,
    until: Annotated[datetime | None, Query(alias="to")] = None,
    after: Annotated[int | None, Query(ge=-1, le=MAX_INT64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    records = await gateway(request).audit.query(
        AuditQuery(
            tenant=None if caller.platform else caller.tenant,
            actor=actor,
            action=action,
            since=since.timestamp() if since else None,
            until=until.timestamp() if until else None,
            after=after,
            limit=limit,
        )
    )
    return page(records, limit, lambda r: r.seq, lambda r: r.view())


@router.get("/v1/audit/checkpoints/latest", summary="The newest signed checkpoint")
async def latest_checkpoint(request: Request, caller: AuditReader) -> Response:
    trail = gateway(request).audit
    latest = await trail.latest_checkpoint()
    if latest is None:
        # A young log has records but no periodic checkpoint yet; sign the first
        # one now rather than make a verifier wait for the interval.
        latest = await trail.checkpoint()
    if latest is None:
        raise NotFound("The audit log is empty; there is no checkpoint yet.")
    blob = latest.text().rstrip("\n").rsplit(" ", 1)[1]
    return json_response(
        {
            "origin": latest.checkpoint.origin,
            "tree_size": latest.checkpoint.tree_size,
            "root_hash": latest.checkpoint.root_hash.hex(),
            "timestamp": latest.checkpoint.timestamp,
            "signature": blob,
            "key_name": latest.key_name,
            "verifier_key": trail.verifier_key,
            "text": latest.text(),
        }
    )


@router.get("/v1/audit/proof/inclusion", summary="RFC 9162 inclusion proof of one record")
async def inclusion_proof(
    request: Request,
    caller: AuditReader,
    seq: Annotated[int, Query(ge=0, le=MAX_INT64)],
    tree_size: Annotated[int, Query(ge=1, le=MAX_INT64)],
) -> Response:
    if not caller.platform:
        own = await gateway(request).audit.query(
            AuditQuery(tenant=caller.tenant, after=seq - 1, limit=1)
        )
        if not own or own[0].seq != seq:
            raise NotFound("There is no such audit record.")
    log = gateway(request).store.audit
    proof = await log.inclusion_proof(seq, tree_size)
    return json_response(
        {
            "leaf_index": seq,
            "tree_size": tree_size,
            "leaf_hash": (await log.leaf(seq)).hex(),
            "audit_path": [node.hex() for node in proof],
            "root_hash": (await log.root(tree_size)).hex(),
        }
    )


@router.get("/v1/audit/proof/consistency", summary="RFC 9162 consistency proof between sizes")
async def consistency_proof(
    request: Request,
    caller: AuditReader,
    first: Annotated[int, Query(ge=1, le=MAX_INT64)],
    second: Annotated[int, Query(ge=1, le=MAX_INT64)],
) -> Response:
    log = gateway(request).store.audit
    proof = await log.consistency_proof(first, second)
    return json_response(
        {
            "first": first,
            "second": second,
            "first_root": (await log.root(first)).hex(),
            "second_root": (await log.root(second)).hex(),
            "proof": [node.hex() for node in proof],
        }
    )
