"""What risk needs of its stores beyond the ports, and in-process stores.

``ErasablePolicyStore`` and ``DecisionJournal`` extend the ports'
``PolicyStore`` and ``DecisionStore`` with what tenant erasure, retention and
group-committed publishing need. The memory stores are for tests, benchmarks
and one-off runs; the gateway keeps policies and decisions in its database
(``strongroom.adapters.sql.risk``, ``adapters.sqlite.decisions``,
``adapters.postgres.decisions``) so every gateway and the CLI share them.

Rules every ``DecisionJournal`` keeps:

1. ``put`` and ``put_published`` store a decision once per (tenant,
   transaction id) and per (tenant, Idempotency-Key): the first wins and every
   later caller gets the stored one back.
2. When ``put_published`` returns, the decision is committed, and so is its
   stream record when ``publishes_to(log)`` said so: both in one transaction,
   so a decision is never stored without its record nor published without
   being stored. A stored winner comes back without publishing anything.
3. ``prune(before)`` deletes the decisions stored before that time and
   returns how many; ``erase_tenant`` deletes all of a tenant's.
"""

from __future__ import annotations

from abc import abstractmethod
from collections import OrderedDict
from datetime import datetime
from typing import Final

from strongroom.domain.risk import (
    DEFAULT_POLICY,
    AppliedPolicy,
    DecisionRecord,
    Policy,
    validate_policy_text,
)
from strongroom.ports import DecisionStore, EventLog, NewRecord, PolicyStore

DEFAULT_MAX_DECISIONS: Final = 100_000


class ErasablePolicyStore(PolicyStore):
    """A ``PolicyStore`` that can forget a tenant (erasure)."""

    @abstractmethod
    async def erase_tenant(self, tenant: str) -> int:
        """Delete every policy version and application of the tenant; returns how many
        versions went.

        Raises:
            StorageUnavailable: the store failed; a retry is safe.
        """


class DecisionJournal(DecisionStore):
    """A ``DecisionStore`` that can publish in its commit, prune and erase (module rules)."""

    def publishes_to(self, log: EventLog | None) -> bool:
        """Whether ``put_published`` writes to ``log`` in the decision's own transaction."""
        return False

    async def put_published(
        self,
        record: DecisionRecord,
        topic: str,
        published: NewRecord,
        *,
        document: bytes | None = None,
    ) -> DecisionRecord:
        """``put``, and ``published`` appended to ``topic`` in the same commit (rule 2).

        Only for a log ``publishes_to`` accepted. ``document`` is the record's
        stored JSON (``to_storage`` as JSON), when the caller made it already.

        Raises:
            StorageUnavailable, Backpressure: nothing was stored; a retry is safe.
        """
        raise NotImplementedError("this decision store does not publish; use put and the log")

    @abstractmethod
    async def prune(self, before: float) -> int:
        """Delete decisions stored before ``before`` (seconds since the epoch); how many.

        Raises:
            StorageUnavailable: the store failed; what was deleted stays deleted.
        """

    @abstractmethod
    async def erase_tenant(self, tenant: str) -> int:
        """Delete every decision of the tenant; returns how many.

        Raises:
            StorageUnavailable: the store failed; a retry is safe.
        """

    async def aclose(self) -> None:
        """Finish what is queued and stop background work; idempotent."""


class MemoryPolicyStore(ErasablePolicyStore):
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

    async def erase_tenant(self, tenant: str) -> int:
        versions = [key for key in self._versions if key[0] == tenant]
        for key in versions:
            del self._versions[key]
        self._active.pop(tenant, None)
        self._history.pop(tenant, None)
        return len(versions)


class MemoryDecisionStore(DecisionJournal):
    """``DecisionStore`` for one process, keeping the newest ``max_records``."""

    def __init__(self, *, max_records: int = DEFAULT_MAX_DECISIONS) -> None:
        if max_records < 1:
            raise ValueError("max_records must be at least 1")
        self._records: OrderedDict[tuple[str, str], tuple[DecisionRecord, float]] = OrderedDict()
        self._by_transaction: dict[tuple[str, str], str] = {}
        self._by_key: dict[tuple[str, str], str] = {}
        self._max = max_records

    def __len__(self) -> int:
        return len(self._records)

    async def put(self, record: DecisionRecord, *, now: float | None = None) -> DecisionRecord:
        """Store ``record``; ``now`` (the time it counts as stored, for ``prune``)
        defaults to its ``evaluated_at``."""
        existing = self._lookup(record.tenant, record.transaction_id, record.idempotency_key)
        if existing is not None:
            return existing
        tenant = record.tenant
        stored_at = _epoch(record.evaluated_at) if now is None else now
        self._records[(tenant, record.trace_id)] = (record, stored_at)
        self._by_transaction[(tenant, record.transaction_id)] = record.trace_id
        if record.idempotency_key is not None:
            self._by_key[(tenant, record.idempotency_key)] = record.trace_id
        while len(self._records) > self._max:
            _, (old, _) = self._records.popitem(last=False)
            self._unindex(old)
        return record

    def _unindex(self, record: DecisionRecord) -> None:
        self._by_transaction.pop((record.tenant, record.transaction_id), None)
        if record.idempotency_key is not None:
            self._by_key.pop((record.tenant, record.idempotency_key), None)

    async def get(self, tenant: str, trace_id: str) -> DecisionRecord | None:
        found = self._records.get((tenant, trace_id))
        return None if found is None else found[0]

    async def find(
        self, tenant: str, *, transaction_id: str, idempotency_key: str | None
    ) -> DecisionRecord | None:
        return self._lookup(tenant, transaction_id, idempotency_key)

    def _lookup(
        self, tenant: str, transaction_id: str, idempotency_key: str | None
    ) -> DecisionRecord | None:
        trace_id = None
        if idempotency_key is not None:
            trace_id = self._by_key.get((tenant, idempotency_key))
        if trace_id is None:
            trace_id = self._by_transaction.get((tenant, transaction_id))
        found = None if trace_id is None else self._records.get((tenant, trace_id))
        return None if found is None else found[0]

    def _delete(self, keys: list[tuple[str, str]]) -> int:
        for key in keys:
            record, _ = self._records.pop(key)
            self._unindex(record)
        return len(keys)

    async def prune(self, before: float) -> int:
        return self._delete([key for key, (_, at) in self._records.items() if at < before])

    async def erase_tenant(self, tenant: str) -> int:
        return self._delete([key for key in self._records if key[0] == tenant])


def _epoch(evaluated_at: str) -> float:
    return datetime.fromisoformat(evaluated_at.replace("Z", "+00:00")).timestamp()
