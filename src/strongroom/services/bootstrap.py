"""The first credential of an install: the platform administrator's key.

``strongroom init`` creates it explicitly; ``serve`` does the same on a fresh
install with no configured keys, so that a new gateway is never open and never
locked. The key is returned once; only its keyed hash is stored.
"""

from __future__ import annotations

from strongroom.domain.access import Role
from strongroom.domain.tenancy import DEFAULT_TENANT_ID
from strongroom.errors import Conflict
from strongroom.ports import ApiKeyRepository
from strongroom.services.keys import IssuedKey, KeyService
from strongroom.services.tenants import TenantService


async def is_initialised(keys: ApiKeyRepository) -> bool:
    """True once any managed key exists in any tenant."""
    return await keys.any_exist()


async def initialise(
    tenants: TenantService, keys: KeyService, repository: ApiKeyRepository, *, tenant_name: str
) -> IssuedKey:
    """Create the first tenant (if needed) and the platform administrator's key.

    Raises:
        Conflict: the install already has managed keys.
    """
    if await is_initialised(repository):
        raise Conflict("This install is already initialised; use 'strongroom keys create'.")
    tenant_id = DEFAULT_TENANT_ID if tenant_name == DEFAULT_TENANT_ID else None
    existing = await tenants.find(tenant_name)
    tenant = existing or await tenants.create(tenant_name, tenant_id=tenant_id)
    return await keys.create(
        tenant_id=tenant.id,
        name="platform admin",
        role=Role.ADMIN,
        scopes=None,
        expires_at=None,
        granted_by=None,
        platform=True,
    )
