"""Explanations are checkable, for any facts and any weights (hypothesis)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.domain.risk import (
    DEFAULT_POLICY,
    Band,
    Decision,
    DecisionRecord,
    Facts,
    Policy,
    evaluate,
)

VELOCITY_NAMES = [f.name for f in DEFAULT_POLICY.velocity_factors()]


def maybe(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | values


ids = st.text(alphabet="abcdef0123456789_", min_size=1, max_size=12)
countries = st.sampled_from(["DE", "FR", "US", "GB", "BR"])

facts_strategy = st.builds(
    Facts,
    transaction_id=ids,
    amount=st.integers(min_value=0, max_value=10**12),
    currency=st.sampled_from(["EUR", "USD", "GBP", "JPY", "KWD", "CHF"]),
    merchant_id_hash=ids,
    card_token=maybe(ids),
    card_bin=maybe(st.from_regex(r"\A[0-9]{6,8}\Z")),
    card_country=maybe(countries),
    last4=maybe(st.from_regex(r"\A[0-9]{4}\Z")),
    brand=maybe(st.sampled_from(["visa", "mastercard"])),
    customer_ref_hash=maybe(ids),
    device_id=maybe(ids),
    ip_hash=maybe(ids),
    country=maybe(countries),
    channel=maybe(st.sampled_from(["web", "offline", "pos_offline", "app"])),
    agent_id=maybe(ids),
    agent_verified=maybe(st.booleans()),
    processor=maybe(st.sampled_from(["acme", "stripe"])),
    processor_band=maybe(st.sampled_from(list(Band))),
    velocity=st.dictionaries(
        st.sampled_from(VELOCITY_NAMES), st.integers(min_value=0, max_value=10**9)
    ),
    first_seen_card=st.booleans(),
)


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    """The default policy's factors with any weights and thresholds."""
    data: dict[str, Any] = json.loads(DEFAULT_POLICY.canonical_json())
    for factor in data["factors"]:
        factor["weight"] = draw(st.integers(min_value=0, max_value=100))
    review = draw(st.integers(min_value=0, max_value=99))
    data["review_threshold"] = review
    data["decline_threshold"] = draw(st.integers(min_value=review + 1, max_value=100))
    return Policy.model_validate(data)


def check_explains(decision: Decision, policy: Policy) -> None:
    assert 0 <= decision.score <= 100
    assert sum(f.contribution for f in decision.factors) == decision.score
    assert [f.name for f in decision.factors] == [f.name for f in policy.factors]
    for result in decision.factors:
        assert 0 <= result.contribution <= result.weight
        assert result.triggered or result.contribution == 0
        assert result.reason.endswith(".")
    counted = sorted(
        (f for f in decision.factors if f.contribution > 0), key=lambda f: (-f.contribution, f.name)
    )
    assert decision.reasons == tuple(f.reason for f in counted)
    assert set(decision.reasons) <= {f.reason for f in decision.factors}
    expected = (
        "decline"
        if decision.score >= policy.decline_threshold
        else "review"
        if decision.score >= policy.review_threshold
        else "approve"
    )
    assert decision.decision == expected
    assert decision.policy_version == policy.version


@settings(max_examples=300, deadline=None)
@given(facts_strategy)
def test_default_policy_decisions_explain_themselves_and_replay(facts: Facts) -> None:
    first = evaluate(DEFAULT_POLICY, facts)
    check_explains(first, DEFAULT_POLICY)
    assert evaluate(DEFAULT_POLICY, facts) == first
    # Stored as JSON and read back, the inputs give exactly the same decision.
    record = DecisionRecord(
        tenant="t",
        trace_id="trc_x",
        transaction_id=facts.transaction_id,
        idempotency_key=None,
        fingerprint="f",
        evaluated_at="2024-01-01T00:00:00.000Z",
        facts=facts,
        decision=first,
    )
    stored = DecisionRecord.from_storage(json.loads(json.dumps(record.to_storage())))
    assert stored == record
    assert evaluate(DEFAULT_POLICY, stored.facts) == stored.decision


@settings(max_examples=200, deadline=None)
@given(policies(), facts_strategy)
def test_any_weights_keep_the_rules(policy: Policy, facts: Facts) -> None:
    decision = evaluate(policy, facts)
    check_explains(decision, policy)
    assert evaluate(policy, facts) == decision
    triggered = [f for f in decision.factors if f.triggered]
    # Capping only ever cuts at 100: below it, every triggered factor gets its weight.
    assert decision.score == min(100, sum(f.weight for f in triggered))
