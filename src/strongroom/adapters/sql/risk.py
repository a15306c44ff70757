"""Risk policies and decisions on SQLAlchemy Core, for SQLite and PostgreSQL.

Rules these repositories keep:

1. A tenant's active policy is the version of its newest row in
   ``risk_policy_history``; with none, it is ``DEFAULT_POLICY``.
2. ``get_active`` may answer from a per-process cache for up to
   ``cache_seconds``: a policy applied elsewhere (another gateway, the CLI)
   is in force everywhere within that time. Parsed versions are cached
   without expiry, since a version is its content hash and never changes.
3. A decision is stored once per (tenant, transaction id) and per (tenant,
   Idempotency-Key): ``INSERT ... ON CONFLICT DO NOTHING`` lets the first
   writer win, whichever gateway it ran on, and the loser reads the winner.
"""

from __future__ import annotations

import json
import time
from typing import Any, Final

from sqlalchemy import or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from strongroom.adapters.sql.engine import translate_errors
from strongroom.adapters.sql.tables import risk_decisions, risk_policies, risk_policy_history
from strongroom.domain.risk import (
    DEFAULT_POLICY,
    AppliedPolicy,
    DecisionRecord,
    Policy,
    validate_policy_text,
)
from strongroom.ports import DecisionStore, PolicyStore

DEFAULT_POLICY_CACHE_SECONDS: Final = 1.0
#: Parsed versions kept in memory; past this the cache starts over.
MAX_CACHED_VERSIONS: Final = 10_000


def _insert(engine: AsyncEngine) -> Any:
    return postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert


class SqlPolicyStore(PolicyStore):
    """``PolicyStore`` in the gateway's database, shared by every gateway and the CLI."""

    def __init__(
        self, engine: AsyncEngine, *, cache_seconds: float = DEFAULT_POLICY_CACHE_SECONDS
    ) -> None:
        if cache_seconds < 0:
            raise ValueError("cache_seconds must not be negative")
        self._engine = engine
        self._insert = _insert(engine)
        self._cache_seconds = cache_seconds
        self._parsed: dict[tuple[str, str], Policy] = {}
        self._active: dict[str, tuple[Policy, float]] = {}

    def _parse(self, tenant: str, version: str, text: str) -> Policy:
        found = self._parsed.get((tenant, version))
        if found is None:
            if len(self._parsed) >= MAX_CACHED_VERSIONS:
                self._parsed.clear()
            found = self._parsed[(tenant, version)] = validate_policy_text(text)
        return found

    async def get_active(self, tenant: str) -> Policy:
        cached = self._active.get(tenant)
        clock = time.monotonic()
        if cached is not None and clock - cached[1] < self._cache_seconds:
            return cached[0]
        query = (
            select(risk_policy_history.c.version, risk_policies.c.text)
            .join(
                risk_policies,
                (risk_policies.c.tenant == risk_policy_history.c.tenant)
                & (risk_policies.c.version == risk_policy_history.c.version),
            )
            .where(risk_policy_history.c.tenant == tenant)
            .order_by(risk_policy_history.c.id.desc())
            .limit(1)
        )
        async with translate_errors(), self._engine.connect() as connection:
            row = (await connection.execute(query)).first()
        policy = DEFAULT_POLICY if row is None else self._parse(tenant, row.version, row.text)
        if len(self._active) >= MAX_CACHED_VERSIONS:
            self._active.clear()
        self._active[tenant] = (policy, clock)
        return policy

    async def apply(self, tenant: str, text: str, actor: str, now: float) -> AppliedPolicy:
        policy = validate_policy_text(text)
        version = policy.version
        keep = self._insert(risk_policies).values(
            tenant=tenant, version=version, text=text, created_at=now
        )
        keep = keep.on_conflict_do_nothing(index_elements=["tenant", "version"])
        record = risk_policy_history.insert().values(
            tenant=tenant, version=version, actor=actor[:128], applied_at=now
        )
        async with translate_errors(), self._engine.begin() as connection:
            await connection.execute(keep)
            await connection.execute(record)
        self._parsed.setdefault((tenant, version), policy)
        self._active[tenant] = (policy, time.monotonic())
        return AppliedPolicy(tenant, version, text, actor, now, policy)

    async def get(self, tenant: str, version: str) -> Policy | None:
        if version == DEFAULT_POLICY.version:
            return DEFAULT_POLICY
        found = self._parsed.get((tenant, version))
        if found is not None:
            return found
        query = (
            select(risk_policies.c.text)
            .where(risk_policies.c.tenant == tenant)
            .where(risk_policies.c.version == version)
        )
        async with translate_errors(), self._engine.connect() as connection:
            row = (await connection.execute(query)).first()
        return None if row is None else self._parse(tenant, version, row.text)

    async def history(self, tenant: str) -> list[AppliedPolicy]:
        query = (
            select(
                risk_policy_history.c.version,
                risk_policy_history.c.actor,
                risk_policy_history.c.applied_at,
                risk_policies.c.text,
            )
            .join(
                risk_policies,
                (risk_policies.c.tenant == risk_policy_history.c.tenant)
                & (risk_policies.c.version == risk_policy_history.c.version),
            )
            .where(risk_policy_history.c.tenant == tenant)
            .order_by(risk_policy_history.c.id)
        )
        async with translate_errors(), self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [
            AppliedPolicy(
                tenant,
                row.version,
                row.text,
                row.actor,
                row.applied_at,
                self._parse(tenant, row.version, row.text),
            )
            for row in rows
        ]


def _record(text: str) -> DecisionRecord:
    return DecisionRecord.from_storage(json.loads(text))


class SqlDecisionStore(DecisionStore):
    """``DecisionStore`` in the gateway's database: decisions outlive a restart."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._insert = _insert(engine)

    async def put(self, record: DecisionRecord) -> DecisionRecord:
        document = json.dumps(record.to_storage(), separators=(",", ":"), ensure_ascii=False)
        statement = (
            self._insert(risk_decisions)
            .values(
                trace_id=record.trace_id,
                tenant=record.tenant,
                transaction_id=record.transaction_id,
                idempotency_key=record.idempotency_key,
                record=document,
                created_at=time.time(),
            )
            .on_conflict_do_nothing()
        )
        async with translate_errors(), self._engine.begin() as connection:
            result = await connection.execute(statement)
        if result.rowcount == 1:
            return record
        existing = await self.find(
            record.tenant,
            transaction_id=record.transaction_id,
            idempotency_key=record.idempotency_key,
        )
        return record if existing is None else existing

    async def get(self, tenant: str, trace_id: str) -> DecisionRecord | None:
        query = (
            select(risk_decisions.c.record)
            .where(risk_decisions.c.trace_id == trace_id)
            .where(risk_decisions.c.tenant == tenant)
        )
        async with translate_errors(), self._engine.connect() as connection:
            row = (await connection.execute(query)).first()
        return None if row is None else _record(row.record)

    async def find(
        self, tenant: str, *, transaction_id: str, idempotency_key: str | None
    ) -> DecisionRecord | None:
        match = risk_decisions.c.transaction_id == transaction_id
        if idempotency_key is not None:
            match = or_(match, risk_decisions.c.idempotency_key == idempotency_key)
        query = (
            select(risk_decisions.c.idempotency_key, risk_decisions.c.record)
            .where(risk_decisions.c.tenant == tenant)
            .where(match)
            .limit(2)
        )
        async with translate_errors(), self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        if not rows:
            return None
        # The Idempotency-Key wins over the transaction id, as in the memory store.
        keyed = [row for row in rows if idempotency_key is not None and row[0] == idempotency_key]
        return _record((keyed or rows)[0].record)
