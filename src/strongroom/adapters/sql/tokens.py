"""The token vault's rows on SQLAlchemy Core."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from strongroom.adapters.sql.engine import translate_errors
from strongroom.adapters.sql.tables import card_tokens
from strongroom.crypto.envelope import read_header
from strongroom.ports import CardToken, TokenRepository


def _token(row: Any) -> CardToken:
    return CardToken(
        token=row.token,
        tenant=row.tenant,
        fingerprint=bytes(row.fingerprint),
        sealed_number=row.sealed_number,
        last4=row.last4,
        bin6=row.bin6,
        brand=row.brand,
        exp_month=row.exp_month,
        exp_year=row.exp_year,
        created_at=row.created_at,
    )


class SqlTokenRepository(TokenRepository):
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def by_fingerprint(self, tenant: str, fingerprint: bytes) -> CardToken | None:
        query = (
            select(card_tokens)
            .where(card_tokens.c.tenant == tenant)
            .where(card_tokens.c.fingerprint == fingerprint)
        )
        async with translate_errors(), self._engine.connect() as connection:
            row = (await connection.execute(query)).first()
        return None if row is None else _token(row)

    async def get(self, tenant: str, token: str) -> CardToken | None:
        query = (
            select(card_tokens)
            .where(card_tokens.c.token == token)
            .where(card_tokens.c.tenant == tenant)
        )
        async with translate_errors(), self._engine.connect() as connection:
            row = (await connection.execute(query)).first()
        return None if row is None else _token(row)

    async def insert(self, card: CardToken) -> CardToken:
        values = {
            "token": card.token,
            "tenant": card.tenant,
            "fingerprint": card.fingerprint,
            "sealed_number": card.sealed_number,
            "dek_id": read_header(card.sealed_number).dek_id,
            "last4": card.last4,
            "bin6": card.bin6,
            "brand": card.brand,
            "exp_month": card.exp_month,
            "exp_year": card.exp_year,
            "created_at": card.created_at,
        }
        try:
            async with translate_errors(), self._engine.begin() as connection:
                await connection.execute(insert(card_tokens).values(**values))
        except Exception as exc:
            # A concurrent request for the same card committed first: its token wins.
            if not isinstance(exc.__cause__, IntegrityError):
                raise
            existing = await self.by_fingerprint(card.tenant, card.fingerprint)
            if existing is None:
                raise
            return existing
        return card

    async def update_expiry(self, tenant: str, token: str, exp_month: int, exp_year: int) -> None:
        statement = (
            update(card_tokens)
            .where(card_tokens.c.tenant == tenant)
            .where(card_tokens.c.token == token)
            .values(exp_month=exp_month, exp_year=exp_year)
        )
        async with translate_errors(), self._engine.begin() as connection:
            await connection.execute(statement)

    async def delete(self, tenant: str, token: str) -> bool:
        statement = (
            delete(card_tokens)
            .where(card_tokens.c.tenant == tenant)
            .where(card_tokens.c.token == token)
        )
        async with translate_errors(), self._engine.begin() as connection:
            result = await connection.execute(statement)
        return result.rowcount == 1

    async def sealed_with(self, dek_id: str, *, after: str | None, limit: int) -> list[CardToken]:
        query = select(card_tokens).where(card_tokens.c.dek_id == dek_id)
        if after is not None:
            query = query.where(card_tokens.c.token > after)
        query = query.order_by(card_tokens.c.token).limit(limit)
        async with translate_errors(), self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [_token(row) for row in rows]

    async def reseal(self, tenant: str, token: str, old: str, new: str) -> bool:
        statement = (
            update(card_tokens)
            .where(card_tokens.c.tenant == tenant)
            .where(card_tokens.c.token == token)
            .where(card_tokens.c.sealed_number == old)
            .values(sealed_number=new, dek_id=read_header(new).dek_id)
        )
        async with translate_errors(), self._engine.begin() as connection:
            result = await connection.execute(statement)
        return result.rowcount == 1

    async def erase_tenant(self, tenant: str) -> int:
        async with translate_errors(), self._engine.begin() as connection:
            result = await connection.execute(
                delete(card_tokens).where(card_tokens.c.tenant == tenant)
            )
        return int(result.rowcount)
