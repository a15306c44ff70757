"""What risk evaluation takes and gives: requests, results, and their errors.

``RiskRequest`` is a transaction with its card already tokenized;
``Evaluation``, ``ReplayResult`` and ``ShadowDiff`` are what ``RiskService``
answers. ``fingerprint`` identifies a request's inputs, so a replay with other
inputs is refused.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import string
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from strongroom.domain.events import EventCard
from strongroom.domain.risk import (
    Decision,
    DecisionRecord,
    Policy,
    PolicyInvalid,
    TransactionRequest,
    validate_policy_text,
)
from strongroom.errors import FieldError, InvalidRequest

TRACE_PREFIX: Final = "trc_"
TRACE_RANDOM_CHARS: Final = 24
_BASE62: Final = string.ascii_letters + string.digits
_DIGEST_HEX: Final = 32
_TRACE_SPACE: Final = 62**TRACE_RANDOM_CHARS


def new_trace_id() -> str:
    """``trc_`` and 24 random base62 characters (about 143 bits)."""
    # One draw below 62**24, written in base 62: uniform, and a tenth of the
    # cost of drawing each character on its own.
    number = secrets.randbelow(_TRACE_SPACE)
    chars = []
    for _ in range(TRACE_RANDOM_CHARS):
        number, digit = divmod(number, 62)
        chars.append(_BASE62[digit])
    return TRACE_PREFIX + "".join(chars)


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:_DIGEST_HEX]


def timestamp(now: float) -> str:
    return (
        datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


class DecisionConflict(InvalidRequest):
    """Raised when an Idempotency-Key or a transaction id comes back with other inputs."""

    code = "idempotency_conflict"


class PolicyRejected(InvalidRequest):
    """Raised when a policy to apply or to try is invalid (422).

    Each field error is one problem: ``field`` is its path in the policy
    (``factors[2].weight``) and ``message`` starts with its line and column.
    ``problems`` keeps them as ``PolicyError`` for the CLI.
    """

    code = "policy_invalid"

    def __init__(self, exc: PolicyInvalid) -> None:
        errors = tuple(FieldError(error.path or "policy", str(error)) for error in exc.errors)
        super().__init__(str(exc), errors)
        self.problems = exc.errors


def validated(text: str) -> Policy:
    try:
        return validate_policy_text(text)
    except PolicyInvalid as exc:
        raise PolicyRejected(exc) from None


@dataclass(frozen=True, slots=True)
class CardRef:
    """A card as risk sees it: its token and what may be shown of it."""

    token: str
    last4: str | None = None
    brand: str | None = None
    bin: str | None = None
    country: str | None = None


@dataclass(frozen=True, slots=True)
class RiskRequest:
    """A transaction to evaluate, its card already tokenized by the caller."""

    transaction_id: str
    amount: int
    currency: str
    merchant_id_hash: str
    card: CardRef | None = None
    customer_ref_hash: str | None = None
    device_id: str | None = None
    ip: str | None = None
    country: str | None = None
    channel: str | None = None
    agent_id: str | None = None
    agent_verified: bool | None = None
    processor: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    idempotency_key: str | None = None

    @classmethod
    def from_body(
        cls,
        body: TransactionRequest,
        card: CardRef | None,
        *,
        agent_verified: bool | None = None,
        idempotency_key: str | None = None,
    ) -> RiskRequest:
        """The request for a validated body, with the card the caller resolved."""
        metadata = dict(body.metadata or {})
        return cls(
            transaction_id=body.transaction_id,
            amount=body.amount,
            currency=body.currency,
            merchant_id_hash=body.merchant_id_hash,
            card=card,
            customer_ref_hash=body.customer_ref_hash,
            device_id=body.device_id,
            ip=body.ip,
            country=body.country,
            channel=body.channel,
            agent_id=body.agent_id,
            agent_verified=agent_verified,
            processor=body.processor or metadata.get("processor"),
            metadata=metadata,
            idempotency_key=idempotency_key,
        )


@dataclass(frozen=True, slots=True)
class Evaluation:
    """An evaluation's stored record, and whether it was a replay of an earlier one."""

    record: DecisionRecord
    replayed: bool

    def answer(self) -> dict[str, Any]:
        return self.record.answer()


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """A stored decision evaluated again from its stored inputs and policy version."""

    trace_id: str
    reproduced: bool
    stored: Decision
    replayed: Decision

    def to_dict(self) -> dict[str, Any]:
        return {
            "trace_id": self.trace_id,
            "reproduced": self.reproduced,
            "stored": self.stored.to_dict(),
            "replayed": self.replayed.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class ShadowDiff:
    """A sample transaction whose decision the candidate policy would change."""

    line: int
    transaction_id: str
    active: Decision
    candidate: Decision

    def to_dict(self) -> dict[str, Any]:
        def brief(decision: Decision) -> dict[str, Any]:
            return {
                "decision": decision.decision,
                "score": decision.score,
                "policy_version": decision.policy_version,
                "reasons": list(decision.reasons),
            }

        return {
            "line": self.line,
            "transaction_id": self.transaction_id,
            "active": brief(self.active),
            "candidate": brief(self.candidate),
        }


#: Turns a sample's card (a number) into a token, for shadow runs that tokenize.
CardResolver = Callable[[EventCard], Awaitable[CardRef]]


def fingerprint(request: RiskRequest, ip_hash: str | None) -> str:
    card = request.card
    inputs = {
        "transaction_id": request.transaction_id,
        "amount": request.amount,
        "currency": request.currency,
        "merchant_id_hash": request.merchant_id_hash,
        "card": None if card is None else card.token,
        "customer_ref_hash": request.customer_ref_hash,
        "device_id": request.device_id,
        "ip_hash": ip_hash,
        "country": request.country,
        "channel": request.channel,
        "agent_id": request.agent_id,
        "processor": request.processor,
        "metadata": dict(sorted(request.metadata.items())),
    }
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
