"""Tenants' sealed secrets and settings on SQLAlchemy Core."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from strongroom.adapters.sql.engine import translate_errors
from strongroom.adapters.sql.tables import tenant_secrets, tenant_settings
from strongroom.crypto.envelope import read_header
from strongroom.ports import SealedSecret, TenantSecretRepository, TenantSettingsRepository


def _secret(row: Any) -> SealedSecret:
    return SealedSecret(row.tenant, row.name, row.sealed, row.created_at)


def _upsert(engine: AsyncEngine) -> Any:
    """The dialect's INSERT with ON CONFLICT: one statement, so concurrent
    replacements serialize on the row instead of failing on the key."""
    return postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert


class SqlTenantSecretRepository(TenantSecretRepository):
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._insert = _upsert(engine)

    async def put(self, secret: SealedSecret) -> None:
        values = {
            "tenant": secret.tenant,
            "name": secret.name,
            "sealed": secret.sealed,
            "dek_id": read_header(secret.sealed).dek_id,
            "created_at": secret.created_at,
        }
        statement = self._insert(tenant_secrets).values(**values)
        statement = statement.on_conflict_do_update(
            index_elements=["tenant", "name"],
            set_={name: statement.excluded[name] for name in ("sealed", "dek_id", "created_at")},
        )
        async with translate_errors(), self._engine.begin() as connection:
            await connection.execute(statement)

    async def get(self, tenant: str, name: str) -> SealedSecret | None:
        query = (
            select(tenant_secrets)
            .where(tenant_secrets.c.tenant == tenant)
            .where(tenant_secrets.c.name == name)
        )
        async with translate_errors(), self._engine.connect() as connection:
            row = (await connection.execute(query)).first()
        return None if row is None else _secret(row)

    async def sealed_with(self, dek_id: str) -> list[SealedSecret]:
        query = select(tenant_secrets).where(tenant_secrets.c.dek_id == dek_id)
        async with translate_errors(), self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [_secret(row) for row in rows]

    async def reseal(self, tenant: str, name: str, old: str, new: str) -> bool:
        statement = (
            update(tenant_secrets)
            .where(tenant_secrets.c.tenant == tenant)
            .where(tenant_secrets.c.name == name)
            .where(tenant_secrets.c.sealed == old)
            .values(sealed=new, dek_id=read_header(new).dek_id)
        )
        async with translate_errors(), self._engine.begin() as connection:
            result = await connection.execute(statement)
        return result.rowcount == 1

    async def erase_tenant(self, tenant: str) -> int:
        async with translate_errors(), self._engine.begin() as connection:
            result = await connection.execute(
                delete(tenant_secrets).where(tenant_secrets.c.tenant == tenant)
            )
        return int(result.rowcount)


class SqlTenantSettingsRepository(TenantSettingsRepository):
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._insert = _upsert(engine)

    async def get(self, tenant: str) -> dict[str, object]:
        query = select(tenant_settings.c.settings).where(tenant_settings.c.tenant == tenant)
        async with translate_errors(), self._engine.connect() as connection:
            row = (await connection.execute(query)).first()
        if row is None:
            return {}
        document: dict[str, object] = json.loads(row[0])
        return document

    async def put(self, tenant: str, settings: dict[str, object], now: float) -> None:
        document = json.dumps(settings, sort_keys=True)
        statement = self._insert(tenant_settings).values(
            tenant=tenant, settings=document, updated_at=now
        )
        statement = statement.on_conflict_do_update(
            index_elements=["tenant"],
            set_={"settings": statement.excluded.settings, "updated_at": now},
        )
        async with translate_errors(), self._engine.begin() as connection:
            await connection.execute(statement)

    async def erase_tenant(self, tenant: str) -> None:
        async with translate_errors(), self._engine.begin() as connection:
            await connection.execute(
                delete(tenant_settings).where(tenant_settings.c.tenant == tenant)
            )
