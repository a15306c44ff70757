"""Builders shared by the risk tests: facts, requests, events and stubs."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from strongroom.domain.events import PaymentEvent
from strongroom.domain.risk import Facts, Policy, validate_policy_text
from strongroom.ports import AppendResult, Clock, NewRecord
from strongroom.services.risk import CardRef, RiskRequest

#: A time on a 30-second boundary, so test windows line up with health buckets.
T0 = 1_699_999_980.0


def facts(**overrides: Any) -> Facts:
    values: dict[str, Any] = {
        "transaction_id": "txn_1",
        "amount": 1_000,
        "currency": "EUR",
        "merchant_id_hash": "m_hash",
    }
    values.update(overrides)
    return Facts(**values)


def one_factor(factor: str, *, weight: int = 50) -> Policy:
    """A policy with one factor (YAML mapping lines, indented by 4), reviewing from 10."""
    text = (
        "review_threshold: 10\n"
        "decline_threshold: 90\n"
        "factors:\n"
        "  - name: only\n"
        f"    weight: {weight}\n" + "".join(f"    {line}\n" for line in factor.splitlines())
    )
    return validate_policy_text(text)


def request(transaction_id: str = "txn_1", **overrides: Any) -> RiskRequest:
    values: dict[str, Any] = {
        "transaction_id": transaction_id,
        "amount": 1_000,
        "currency": "EUR",
        "merchant_id_hash": "m_hash",
        "card": CardRef(token="tok_card1", last4="4242", brand="visa", bin="424242"),
        "device_id": "dev_1",
        "ip": "203.0.113.7",
        "country": "DE",
        "channel": "web",
    }
    values.update(overrides)
    return RiskRequest(**values)


def hash_ip(ip: str) -> str:
    return hashlib.sha256(b"test-pepper:" + ip.encode()).hexdigest()[:32]


def event(
    processor: str = "acme",
    *,
    merchant: str | None = "m_1",
    event_type: str = "payment_succeeded",
    failure_category: str | None = None,
    failure_origin: str | None = None,
    retry_count: int = 0,
    retry_result: str | None = None,
    geo: str | None = "DE",
) -> PaymentEvent:
    return PaymentEvent(
        event_id=uuid.uuid4(),
        event_type=event_type,
        event_timestamp=datetime.now(UTC),
        processor=processor,
        merchant_id_hash=merchant,
        failure_category=failure_category,
        failure_origin=failure_origin,
        retry_count=retry_count,
        retry_result=retry_result,
        geo_bucket=geo,
    )


@dataclass
class RecordingLog:
    """An EventLog stand-in that keeps appends, idempotent by record id, and can fail."""

    appended: list[tuple[str, NewRecord]] = field(default_factory=list)
    fail_next: int = 0

    async def append(self, topic: str, records: Sequence[NewRecord]) -> AppendResult:
        from strongroom.errors import StorageUnavailable

        if self.fail_next:
            self.fail_next -= 1
            raise StorageUnavailable("the log is down")
        seen = {(t, r.tenant, r.record_id) for t, r in self.appended}
        accepted, duplicates = [], []
        for record in records:
            if (topic, record.tenant, record.record_id) in seen:
                duplicates.append(record.record_id)
            else:
                self.appended.append((topic, record))
                accepted.append(record.record_id)
        return AppendResult(tuple(accepted), tuple(duplicates))


@dataclass
class RecordingAudit:
    records: list[dict[str, Any]] = field(default_factory=list)

    async def record(self, action: str, **fields: Any) -> None:
        self.records.append({"action": action, **fields})


class ManualClock(Clock):
    """A clock that moves only when told to."""

    def __init__(self, start: float = T0) -> None:
        self.time = start

    def now(self) -> float:
        return self.time

    def advance(self, seconds: float) -> None:
        self.time += seconds
