"""Shadow mode: which decisions a candidate policy would change, recording nothing."""

from __future__ import annotations

from typing import Any

import pytest
from risk_support import T0, hash_ip, request

from strongroom.domain.events import EventCard
from strongroom.errors import InvalidRequest
from strongroom.services.risk import (
    CardRef,
    MemoryDecisionStore,
    MemoryPolicyStore,
    PolicyRejected,
    RiskService,
)
from strongroom.services.velocity import MemorySeenCards, MemoryVelocityCounter

TENANT = "ten_a"
CANDIDATE = """\
review_threshold: 20
decline_threshold: 60
factors:
  - {name: tight_velocity, kind: velocity_count, subject: card, window_seconds: 600,
     threshold: 2, weight: 30}
  - {name: big, kind: amount_above, limits: {EUR: 5000}, weight: 60}
"""
ACTIVE = """\
review_threshold: 20
decline_threshold: 60
factors:
  - {name: big, kind: amount_above, limits: {EUR: 100000}, weight: 60}
"""


def sample(transaction_id: str, amount: int = 1_000, token: str = "tok_a") -> dict[str, Any]:
    return {
        "transaction_id": transaction_id,
        "amount": amount,
        "currency": "EUR",
        "merchant_id_hash": "m",
        "card": {"token": token},
        "ip": "198.51.100.1",
    }


@pytest.fixture
def velocity() -> MemoryVelocityCounter:
    return MemoryVelocityCounter()


@pytest.fixture
async def risk(velocity: MemoryVelocityCounter) -> RiskService:
    service = RiskService(
        policies=MemoryPolicyStore(),
        decisions=MemoryDecisionStore(),
        velocity=velocity,
        seen_cards=MemorySeenCards(),
        hash_ip=hash_ip,
    )
    await service.apply_policy(TENANT, ACTIVE, actor="test", now=T0)
    return service


async def test_shadow_lists_only_changed_decisions(risk: RiskService) -> None:
    samples = [sample("s1"), sample("s2", amount=6_000), sample("s3", amount=200_000)]
    diffs = await risk.shadow(TENANT, CANDIDATE, samples, T0)
    # s1 stays approved; s3 is declined by both; only s2 changes.
    assert [(d.line, d.transaction_id) for d in diffs] == [(2, "s2")]
    (diff,) = diffs
    assert (diff.active.decision, diff.candidate.decision) == ("approve", "decline")
    body = diff.to_dict()
    assert body["candidate"]["reasons"] == ["The amount 60.00 EUR is above the limit of 50.00 EUR."]
    assert body["active"]["policy_version"] != body["candidate"]["policy_version"]


async def test_live_shadow_reads_counters_without_recording(
    risk: RiskService, velocity: MemoryVelocityCounter
) -> None:
    for n in range(2):
        await risk.evaluate(TENANT, request(f"live{n}", card=CardRef("tok_a")), T0 + n)
    before = velocity.size
    diffs = await risk.shadow(TENANT, CANDIDATE, [sample("s1"), sample("s2")], T0 + 5)
    # Two live uses plus the sample itself is 3 > 2: both samples would go to review.
    assert [(d.transaction_id, d.candidate.decision) for d in diffs] == [
        ("s1", "review"),
        ("s2", "review"),
    ]
    assert velocity.size == before
    after = await risk.evaluate(TENANT, request("live2", card=CardRef("tok_a")), T0 + 6)
    assert after.record.facts.first_seen_card is False


async def test_isolated_shadow_counts_the_samples_among_themselves(risk: RiskService) -> None:
    samples = [sample(f"s{n}") for n in range(4)] + [sample("other", token="tok_b")]
    diffs = await risk.shadow(TENANT, CANDIDATE, samples, T0, isolated=True)
    assert [d.transaction_id for d in diffs] == ["s2", "s3"]
    assert diffs[0].candidate.reasons == (
        "The card was used 3 times in the last 10 minutes, above the limit of 2.",
    )
    # Nothing reached the live counters.
    assert (await risk.shadow(TENANT, CANDIDATE, samples[:1], T0)) == []


async def test_invalid_candidates_and_samples_are_refused(risk: RiskService) -> None:
    with pytest.raises(PolicyRejected):
        await risk.shadow(TENANT, "review_threshold: 1\n", [], T0)
    bad = sample("s2")
    bad["amount"] = "12"
    with pytest.raises(InvalidRequest, match="Sample transaction 2") as caught:
        await risk.shadow(TENANT, CANDIDATE, [sample("s1"), bad], T0)
    assert caught.value.errors[0].field == "line 2: amount"
    number = "4242424242424242"
    with_number = sample("s1")
    with_number["card"] = {"number": number, "exp_month": 12, "exp_year": 2030}
    with pytest.raises(InvalidRequest) as caught:
        await risk.shadow(TENANT, CANDIDATE, [with_number], T0)
    assert number not in str(caught.value)
    assert all(number not in e.message for e in caught.value.errors)


async def test_a_resolver_may_tokenize_sample_cards(risk: RiskService) -> None:
    seen: list[EventCard] = []

    async def resolve(card: EventCard) -> CardRef:
        seen.append(card)
        return CardRef(token="tok_resolved", bin="424242")

    with_number = sample("s1", amount=6_000)
    with_number["card"] = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030}
    diffs = await risk.shadow(TENANT, CANDIDATE, [with_number], T0, resolve_card=resolve)
    assert len(seen) == 1
    assert diffs[0].candidate.factors[0].value == 1
