"""What risk evaluation keeps: stored decisions and applied policies."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from strongroom.domain.risk.evaluation import Decision, Facts
from strongroom.domain.risk.policy import Policy


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """A decision with its inputs, tokenized and hashed: enough to replay it.

    ``fingerprint`` identifies the request's inputs, so a replay with the same
    idempotency key or transaction id but different inputs can be refused.
    """

    tenant: str
    trace_id: str
    transaction_id: str
    idempotency_key: str | None
    fingerprint: str
    evaluated_at: str
    facts: Facts
    decision: Decision
    metadata: Mapping[str, str] = field(default_factory=dict)

    def card(self) -> dict[str, str | None] | None:
        if self.facts.card_token is None:
            return None
        return {
            "token": self.facts.card_token,
            "last4": self.facts.last4,
            "brand": self.facts.brand,
        }

    def answer(self) -> dict[str, Any]:
        """The evaluate response: the decision, its trace id, the card and the time."""
        return {
            **self.decision.to_dict(),
            "trace_id": self.trace_id,
            "transaction_id": self.transaction_id,
            "card": self.card(),
            "evaluated_at": self.evaluated_at,
        }

    def public(self) -> dict[str, Any]:
        """``GET /v1/decisions/{trace_id}``: the answer plus the stored inputs."""
        inputs = self.facts.to_dict()
        inputs["metadata"] = dict(self.metadata)
        return {**self.answer(), "inputs": inputs}

    def to_storage(self) -> dict[str, Any]:
        """A JSON-ready form for a store; ``from_storage`` reads it back exactly."""
        return {
            "tenant": self.tenant,
            "trace_id": self.trace_id,
            "transaction_id": self.transaction_id,
            "idempotency_key": self.idempotency_key,
            "fingerprint": self.fingerprint,
            "evaluated_at": self.evaluated_at,
            "facts": self.facts.to_dict(),
            "decision": self.decision.to_dict(),
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_storage(cls, data: Mapping[str, Any]) -> DecisionRecord:
        """Raises: KeyError, TypeError, ValueError: ``data`` is not a stored record."""
        return cls(
            tenant=str(data["tenant"]),
            trace_id=str(data["trace_id"]),
            transaction_id=str(data["transaction_id"]),
            idempotency_key=data["idempotency_key"],
            fingerprint=str(data["fingerprint"]),
            evaluated_at=str(data["evaluated_at"]),
            facts=Facts.from_dict(data["facts"]),
            decision=Decision.from_dict(data["decision"]),
            metadata=dict(data.get("metadata") or {}),
        )


@dataclass(frozen=True, slots=True)
class AppliedPolicy:
    """A policy version a tenant applied: its source text, who applied it and when."""

    tenant: str
    version: str
    text: str
    actor: str
    applied_at: float
    policy: Policy

    def summary(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "actor": self.actor,
            "applied_at": self.applied_at,
            "factors": [factor.name for factor in self.policy.factors],
        }
