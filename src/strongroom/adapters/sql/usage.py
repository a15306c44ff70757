"""Usage counters on SQLAlchemy Core, added with an atomic upsert."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from strongroom.adapters.sql.engine import translate_errors
from strongroom.adapters.sql.tables import usage_daily
from strongroom.ports import UsageRepository, UsageRow


class SqlUsageRepository(UsageRepository):
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    async def add(self, rows: Sequence[UsageRow]) -> None:
        if not rows:
            return
        statement = self._insert(usage_daily)
        # Adding in the database (count = count + excluded.count) instead of
        # read-modify-write keeps concurrent gateways from losing updates.
        statement = statement.on_conflict_do_update(
            index_elements=["tenant_id", "day", "operation"],
            set_={
                "count": usage_daily.c.count + statement.excluded.count,
                "bytes": usage_daily.c.bytes + statement.excluded.bytes,
            },
        )
        async with translate_errors(), self._engine.begin() as connection:
            await connection.execute(
                statement,
                [
                    {
                        "tenant_id": row.tenant_id, "day": row.day, "operation": row.operation,
                        "count": row.count, "bytes": row.bytes,
                    }
                    for row in rows
                ],
            )  # fmt: skip

    async def query(self, tenant_id: str, first_day: str, last_day: str) -> list[UsageRow]:
        query = (
            select(usage_daily)
            .where(
                usage_daily.c.tenant_id == tenant_id,
                usage_daily.c.day >= first_day,
                usage_daily.c.day <= last_day,
            )
            .order_by(usage_daily.c.day, usage_daily.c.operation)
        )
        async with translate_errors(), self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [
            UsageRow(r.tenant_id, r.day, r.operation, r["count"], r["bytes"])
            for r in (row._mapping for row in rows)
        ]
