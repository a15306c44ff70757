"""In-process policy and decision stores: for tests, benchmarks and one-off runs.

The gateway keeps policies and decisions in its SQL store
(``strongroom.adapters.sql.risk``) so every gateway and the CLI share them.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from strongroom.domain.risk import (
    DEFAULT_POLICY,
    AppliedPolicy,
    DecisionRecord,
    Policy,
    validate_policy_text,
)
from strongroom.ports import DecisionStore, PolicyStore

DEFAULT_MAX_DECISIONS: Final = 100_000


class MemoryPolicyStore(PolicyStore):
    """``PolicyStore`` for one process; it forgets everything on restart."""

    def __init__(self) -> None:
        self._versions: dict[tuple[str, str], Policy] = {}
        self._active: dict[str, Policy] = {}
        self._history: dict[str, list[AppliedPolicy]] = {}

    async def get_active(self, tenant: str) -> Policy:
        return self._active.get(tenant, DEFAULT_POLICY)

    async def apply(self, tenant: str, text: str, actor: str, now: float) -> AppliedPolicy:
        policy = validate_policy_text(text)
        policy = self._versions.setdefault((tenant, policy.version), policy)
        applied = AppliedPolicy(tenant, policy.version, text, actor, now, policy)
        self._active[tenant] = policy
        self._history.setdefault(tenant, []).append(applied)
        return applied

    async def get(self, tenant: str, version: str) -> Policy | None:
        if version == DEFAULT_POLICY.version:
            return DEFAULT_POLICY
        return self._versions.get((tenant, version))

    async def history(self, tenant: str) -> list[AppliedPolicy]:
        return list(self._history.get(tenant, ()))


class MemoryDecisionStore(DecisionStore):
    """``DecisionStore`` for one process, keeping the newest ``max_records``."""

    def __init__(self, *, max_records: int = DEFAULT_MAX_DECISIONS) -> None:
        if max_records < 1:
            raise ValueError("max_records must be at least 1")
        self._records: OrderedDict[tuple[str, str], DecisionRecord] = OrderedDict()
        self._by_transaction: dict[tuple[str, str], str] = {}
        self._by_key: dict[tuple[str, str], str] = {}
        self._max = max_records

    def __len__(self) -> int:
        return len(self._records)

    async def put(self, record: DecisionRecord) -> DecisionRecord:
        existing = await self.find(
            record.tenant,
            transaction_id=record.transaction_id,
            idempotency_key=record.idempotency_key,
        )
        if existing is not None:
            return existing
        tenant = record.tenant
        self._records[(tenant, record.trace_id)] = record
        self._by_transaction[(tenant, record.transaction_id)] = record.trace_id
        if record.idempotency_key is not None:
            self._by_key[(tenant, record.idempotency_key)] = record.trace_id
        while len(self._records) > self._max:
            _, old = self._records.popitem(last=False)
            self._by_transaction.pop((old.tenant, old.transaction_id), None)
            if old.idempotency_key is not None:
                self._by_key.pop((old.tenant, old.idempotency_key), None)
        return record

    async def get(self, tenant: str, trace_id: str) -> DecisionRecord | None:
        return self._records.get((tenant, trace_id))

    async def find(
        self, tenant: str, *, transaction_id: str, idempotency_key: str | None
    ) -> DecisionRecord | None:
        trace_id = None
        if idempotency_key is not None:
            trace_id = self._by_key.get((tenant, idempotency_key))
        if trace_id is None:
            trace_id = self._by_transaction.get((tenant, transaction_id))
        return None if trace_id is None else self._records.get((tenant, trace_id))
