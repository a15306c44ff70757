"""Wrapped data keys on SQLAlchemy Core."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from strongroom.adapters.sql.engine import translate_errors
from strongroom.adapters.sql.tables import data_keys
from strongroom.ports import DataKeyRecord, DataKeyRepository, DataKeyState, WrappedKey


def _record(row: Any) -> DataKeyRecord:
    return DataKeyRecord(
        dek_id=row.dek_id,
        tenant=row.tenant,
        wrapped=row.wrapped,
        kek_version=row.kek_version,
        created_at=row.created_at,
        state=row.state,
        reserved=row.reserved,
        max_seals=row.max_seals,
    )


class SqlDataKeyRepository(DataKeyRepository):
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(self, record: DataKeyRecord) -> None:
        async with translate_errors(), self._engine.begin() as connection:
            await connection.execute(
                update(data_keys)
                .where(data_keys.c.tenant == record.tenant)
                .where(data_keys.c.state == DataKeyState.ACTIVE)
                .values(state=DataKeyState.RETIRED)
            )
            await connection.execute(
                insert(data_keys).values(
                    dek_id=record.dek_id,
                    tenant=record.tenant,
                    wrapped=record.wrapped,
                    kek_version=record.kek_version,
                    created_at=record.created_at,
                    state=DataKeyState.ACTIVE,
                    reserved=record.reserved,
                    max_seals=record.max_seals,
                )
            )

    async def active(self, tenant: str) -> DataKeyRecord | None:
        query = (
            select(data_keys)
            .where(data_keys.c.tenant == tenant)
            .where(data_keys.c.state == DataKeyState.ACTIVE)
            .order_by(data_keys.c.created_at.desc())
            .limit(1)
        )
        async with translate_errors(), self._engine.connect() as connection:
            row = (await connection.execute(query)).first()
        return None if row is None else _record(row)

    async def get(self, dek_id: str) -> DataKeyRecord | None:
        async with translate_errors(), self._engine.connect() as connection:
            row = (
                await connection.execute(select(data_keys).where(data_keys.c.dek_id == dek_id))
            ).first()
        return None if row is None else _record(row)

    async def reserve(self, dek_id: str, count: int) -> int | None:
        # One conditional UPDATE: concurrent reservations serialize on the row,
        # and the guard keeps the total within max_seals.
        statement = (
            update(data_keys)
            .where(data_keys.c.dek_id == dek_id)
            .where(data_keys.c.state == DataKeyState.ACTIVE)
            .where(data_keys.c.reserved + count <= data_keys.c.max_seals)
            .values(reserved=data_keys.c.reserved + count)
            .returning(data_keys.c.reserved)
        )
        async with translate_errors(), self._engine.begin() as connection:
            row = (await connection.execute(statement)).first()
        return None if row is None else int(row[0])

    async def rewrapped(self, dek_id: str, old: str, new: WrappedKey) -> bool:
        statement = (
            update(data_keys)
            .where(data_keys.c.dek_id == dek_id)
            .where(data_keys.c.wrapped == old)
            .values(wrapped=new.ciphertext, kek_version=new.kek_version)
        )
        async with translate_errors(), self._engine.begin() as connection:
            result = await connection.execute(statement)
        return result.rowcount == 1

    async def behind(self, version: int, *, after: str | None, limit: int) -> list[DataKeyRecord]:
        query = select(data_keys).where(data_keys.c.kek_version < version)
        if after is not None:
            query = query.where(data_keys.c.dek_id > after)
        query = query.order_by(data_keys.c.dek_id).limit(limit)
        async with translate_errors(), self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [_record(row) for row in rows]

    async def of_tenant(self, tenant: str) -> list[DataKeyRecord]:
        query = (
            select(data_keys).where(data_keys.c.tenant == tenant).order_by(data_keys.c.created_at)
        )
        async with translate_errors(), self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [_record(row) for row in rows]

    async def tenants(self) -> list[str]:
        query = select(data_keys.c.tenant).distinct().order_by(data_keys.c.tenant)
        async with translate_errors(), self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [row[0] for row in rows]

    async def count_by_version(self) -> dict[int, int]:
        query = select(data_keys.c.kek_version, func.count()).group_by(data_keys.c.kek_version)
        async with translate_errors(), self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return {int(version): int(count) for version, count in rows}

    async def delete(self, dek_id: str) -> None:
        async with translate_errors(), self._engine.begin() as connection:
            await connection.execute(delete(data_keys).where(data_keys.c.dek_id == dek_id))

    async def destroy_tenant(self, tenant: str) -> int:
        async with translate_errors(), self._engine.begin() as connection:
            result = await connection.execute(delete(data_keys).where(data_keys.c.tenant == tenant))
        return int(result.rowcount)
