"""Managed API keys on SQLAlchemy Core."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from strongroom.adapters.sql.engine import translate_errors
from strongroom.adapters.sql.tables import api_keys
from strongroom.domain.access import Role
from strongroom.domain.tenancy import ApiKeyRecord, decode_scopes, encode_scopes
from strongroom.ports import ApiKeyRepository


def _record(row: Any) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row.id,
        tenant_id=row.tenant_id,
        name=row.name,
        role=Role(row.role),
        narrowed_to=decode_scopes(row.scopes),
        platform=bool(row.platform),
        mode=row.mode,
        secret_hash=bytes(row.secret_hash),
        created_at=row.created_at,
        created_by=row.created_by,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
        replaced_by=row.replaced_by,
        rate_limit_rps=row.rate_limit_rps,
        rate_limit_burst=row.rate_limit_burst,
    )


def _values(record: ApiKeyRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "tenant_id": record.tenant_id,
        "name": record.name,
        "role": record.role.value,
        "scopes": encode_scopes(record.narrowed_to),
        "platform": record.platform,
        "mode": record.mode,
        "secret_hash": record.secret_hash,
        "created_at": record.created_at,
        "created_by": record.created_by,
        "expires_at": record.expires_at,
        "last_used_at": record.last_used_at,
        "revoked_at": record.revoked_at,
        "replaced_by": record.replaced_by,
        "rate_limit_rps": record.rate_limit_rps,
        "rate_limit_burst": record.rate_limit_burst,
    }


class SqlApiKeyRepository(ApiKeyRepository):
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(self, record: ApiKeyRecord) -> None:
        async with translate_errors(), self._engine.begin() as connection:
            await connection.execute(insert(api_keys).values(**_values(record)))

    async def get(self, key_id: str) -> ApiKeyRecord | None:
        async with translate_errors(), self._engine.connect() as connection:
            query = select(api_keys).where(api_keys.c.id == key_id)
            row = (await connection.execute(query)).first()
        return None if row is None else _record(row)

    async def any_exist(self) -> bool:
        async with translate_errors(), self._engine.connect() as connection:
            row = (await connection.execute(select(api_keys.c.id).limit(1))).first()
        return row is not None

    async def list(self, tenant_id: str, *, after: str | None, limit: int) -> list[ApiKeyRecord]:
        query = (
            select(api_keys)
            .where(api_keys.c.tenant_id == tenant_id)
            .order_by(api_keys.c.id)
            .limit(limit)
        )
        if after is not None:
            query = query.where(api_keys.c.id > after)
        async with translate_errors(), self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [_record(row) for row in rows]

    async def rotate(self, old_id: str, new: ApiKeyRecord, old_expires_at: float) -> bool:
        async with translate_errors(), self._engine.begin() as connection:
            # The row lock (FOR UPDATE on PostgreSQL; the immediate transaction on
            # SQLite) makes two concurrent rotations of one key serialise.
            old = (
                await connection.execute(
                    select(api_keys).where(api_keys.c.id == old_id).with_for_update()
                )
            ).first()
            if old is None or old.revoked_at is not None or old.replaced_by is not None:
                return False
            expiry = old_expires_at
            if old.expires_at is not None:
                expiry = min(old.expires_at, old_expires_at)
            await connection.execute(insert(api_keys).values(**_values(new)))
            await connection.execute(
                update(api_keys)
                .where(api_keys.c.id == old_id)
                .values(expires_at=expiry, replaced_by=new.id)
            )
        return True

    async def revoke(self, key_id: str, now: float) -> bool:
        async with translate_errors(), self._engine.begin() as connection:
            result = await connection.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
        return bool(result.rowcount)

    async def touch(self, last_used: dict[str, float]) -> None:
        if not last_used:
            return
        statement = (
            update(api_keys)
            .where(
                api_keys.c.id == bindparam("key_id"),
                or_(
                    api_keys.c.last_used_at.is_(None),
                    api_keys.c.last_used_at < bindparam("used_at"),
                ),
            )
            .values(last_used_at=bindparam("used_at"))
        )
        async with translate_errors(), self._engine.begin() as connection:
            await connection.execute(
                statement,
                [{"key_id": key, "used_at": used} for key, used in last_used.items()],
            )
