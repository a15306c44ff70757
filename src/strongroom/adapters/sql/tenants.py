"""Tenants on SQLAlchemy Core."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from strongroom.adapters.sql.engine import translate_errors
from strongroom.adapters.sql.tables import api_keys, tenants, usage_daily
from strongroom.domain.tenancy import Tenant, TenantStatus
from strongroom.errors import Conflict
from strongroom.ports import TenantRepository


def _tenant(row: Row[Any]) -> Tenant:
    return Tenant(row.id, row.name, TenantStatus(row.status), row.created_at, row.updated_at)


class SqlTenantRepository(TenantRepository):
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(self, tenant: Tenant) -> None:
        statement = insert(tenants).values(
            id=tenant.id, name=tenant.name, status=tenant.status.value,
            created_at=tenant.created_at, updated_at=tenant.updated_at,
        )  # fmt: skip
        async with translate_errors():
            try:
                async with self._engine.begin() as connection:
                    await connection.execute(statement)
            except IntegrityError:
                raise Conflict(f"A tenant named {tenant.name!r} already exists.") from None

    async def get(self, tenant_id: str) -> Tenant | None:
        async with translate_errors(), self._engine.connect() as connection:
            row = (
                await connection.execute(select(tenants).where(tenants.c.id == tenant_id))
            ).first()
        return None if row is None else _tenant(row)

    async def find(self, id_or_name: str) -> Tenant | None:
        query = (
            select(tenants)
            .where(or_(tenants.c.id == id_or_name, tenants.c.name == id_or_name))
            .order_by((tenants.c.id == id_or_name).desc())
        )
        async with translate_errors(), self._engine.connect() as connection:
            row = (await connection.execute(query)).first()
        return None if row is None else _tenant(row)

    async def list(self, *, after: str | None, limit: int) -> list[Tenant]:
        query = select(tenants).order_by(tenants.c.id).limit(limit)
        if after is not None:
            query = query.where(tenants.c.id > after)
        async with translate_errors(), self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [_tenant(row) for row in rows]

    async def set_status(self, tenant_id: str, status: TenantStatus, now: float) -> Tenant | None:
        async with translate_errors(), self._engine.begin() as connection:
            await connection.execute(
                update(tenants)
                .where(tenants.c.id == tenant_id, tenants.c.status != TenantStatus.ERASED.value)
                .values(status=status.value, updated_at=now)
            )
            row = (
                await connection.execute(select(tenants).where(tenants.c.id == tenant_id))
            ).first()
        return None if row is None else _tenant(row)

    async def erase(self, tenant_id: str, now: float) -> None:
        async with translate_errors(), self._engine.begin() as connection:
            await connection.execute(delete(api_keys).where(api_keys.c.tenant_id == tenant_id))
            await connection.execute(
                delete(usage_daily).where(usage_daily.c.tenant_id == tenant_id)
            )
            # The row stays as a tombstone so the id is never reused; its name,
            # which may identify a person or business, does not.
            await connection.execute(
                update(tenants)
                .where(tenants.c.id == tenant_id)
                .values(status=TenantStatus.ERASED.value, name=tenant_id, updated_at=now)
            )
