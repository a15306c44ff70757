"""RiskService: decisions with trace ids, idempotent replays, stored inputs, replay checks."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from risk_support import T0, RecordingAudit, RecordingLog, event, hash_ip, request

from strongroom.domain.risk import DEFAULT_POLICY
from strongroom.errors import FieldError, NotFound, StorageUnavailable
from strongroom.services.processor_health import ProcessorHealthMonitor
from strongroom.services.risk import (
    DECISIONS_TOPIC,
    CardRef,
    DecisionConflict,
    MemoryDecisionStore,
    MemoryPolicyStore,
    PolicyRejected,
    RiskRequest,
    RiskService,
    new_trace_id,
)
from strongroom.services.velocity import MemorySeenCards, MemoryVelocityCounter

TENANT = "ten_a"
STRICT = """\
review_threshold: 20
decline_threshold: 60
factors:
  - {name: card_velocity, kind: velocity_count, subject: card, window_seconds: 600,
     threshold: 2, weight: 30}
  - {name: big, kind: amount_above, limits: {EUR: 5000}, weight: 30}
"""


def service(**overrides: Any) -> RiskService:
    values: dict[str, Any] = {
        "policies": MemoryPolicyStore(),
        "decisions": MemoryDecisionStore(),
        "velocity": MemoryVelocityCounter(),
        "seen_cards": MemorySeenCards(),
        "hash_ip": hash_ip,
    }
    values.update(overrides)
    return RiskService(**values)


def factor(answer: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in answer["factors"] if f["name"] == name)


def test_trace_ids_look_right() -> None:
    assert re.fullmatch(r"trc_[A-Za-z0-9]{24}", new_trace_id(T0))
    assert new_trace_id(T0) != new_trace_id(T0)


@settings(max_examples=200)
@given(
    earlier=st.floats(min_value=0, max_value=2e11, allow_nan=False),
    gap=st.floats(min_value=0.001, max_value=1e10, allow_nan=False),
)
def test_trace_ids_sort_by_time(earlier: float, gap: float) -> None:
    first, second = new_trace_id(earlier), new_trace_id(earlier + gap)
    # Whole milliseconds decide the order; a gap inside one millisecond may not.
    if int((earlier + gap) * 1000) > int(earlier * 1000):
        assert first < second
    assert re.fullmatch(r"trc_[A-Za-z0-9]{24}", second)


def test_trace_ids_share_only_their_time() -> None:
    ids = {new_trace_id(T0) for _ in range(1000)}
    assert len(ids) == 1000
    assert len({trace[4:12] for trace in ids}) == 1
    # 16 random base62 characters each: no two alike, and every character used.
    assert len({trace[12:] for trace in ids}) == 1000
    assert len({char for trace in ids for char in trace[12:]}) == 62


async def test_an_evaluation_answers_and_is_stored_tokenized() -> None:
    risk = service()
    result = await risk.evaluate(TENANT, request(), T0)
    answer = result.answer()
    assert not result.replayed
    assert set(answer) >= {
        "decision", "score", "trace_id", "policy_version", "factors", "reasons", "card",
        "evaluated_at",
    }  # fmt: skip
    assert re.fullmatch(r"trc_[A-Za-z0-9]{24}", answer["trace_id"])
    assert answer["policy_version"] == DEFAULT_POLICY.version
    assert answer["card"] == {"token": "tok_card1", "last4": "4242", "brand": "visa"}
    assert answer["evaluated_at"] == "2023-11-14T22:13:00.000Z"
    assert factor(answer, "first_seen_card")["contribution"] == 10
    assert (answer["decision"], answer["score"]) == ("approve", 10)
    for item in answer["factors"]:
        assert set(item) >= {"name", "value", "threshold", "weight", "contribution", "reason"}

    stored = (await risk.decision(TENANT, answer["trace_id"])).public()
    assert stored["inputs"]["ip_hash"] == hash_ip("203.0.113.7")
    assert "203.0.113.7" not in json.dumps(stored)
    assert stored["inputs"]["card_token"] == "tok_card1"
    assert stored["inputs"]["velocity"] == {
        "card_amount_24h": 1000,
        "card_velocity": 1,
        "device_velocity": 1,
    }
    assert {k: stored[k] for k in answer} == answer


async def test_replays_return_the_first_decision_and_count_once() -> None:
    velocity = MemoryVelocityCounter()
    risk = service(velocity=velocity)
    first = await risk.evaluate(TENANT, request("t1"), T0)
    again = await risk.evaluate(TENANT, request("t1"), T0 + 5)
    keyed = await risk.evaluate(TENANT, request("t2", idempotency_key="k-2"), T0 + 6)
    keyed_again = await risk.evaluate(TENANT, request("t2", idempotency_key="k-2"), T0 + 7)
    assert again.replayed
    assert keyed_again.replayed
    assert again.record == first.record
    assert keyed_again.record == keyed.record
    # t1 and t2 counted once each: the third transaction on the card is the third use.
    third = (await risk.evaluate(TENANT, request("t3"), T0 + 8)).answer()
    assert factor(third, "card_velocity")["value"] == 3
    assert factor(third, "first_seen_card")["value"] is False


async def test_a_replay_with_other_inputs_is_refused() -> None:
    risk = service()
    await risk.evaluate(TENANT, request("t1", idempotency_key="k"), T0)
    with pytest.raises(DecisionConflict) as caught:
        await risk.evaluate(TENANT, request("t1", amount=2_000), T0)
    assert caught.value.status == 422
    with pytest.raises(DecisionConflict):
        await risk.evaluate(TENANT, request("t9", idempotency_key="k"), T0)


async def test_velocity_triggers_on_the_sixth_use() -> None:
    risk = service()
    answers = [(await risk.evaluate(TENANT, request(f"t{n}"), T0 + n)).answer() for n in range(6)]
    assert [factor(a, "card_velocity")["triggered"] for a in answers] == [False] * 5 + [True]
    sixth = answers[-1]
    assert sixth["reasons"][0] == (
        "The card was used 6 times in the last 10 minutes, above the limit of 5."
    )
    # Ten minutes later the window has moved on.
    later = (await risk.evaluate(TENANT, request("t99"), T0 + 700)).answer()
    assert factor(later, "card_velocity")["value"] == 1


async def test_tenants_are_isolated() -> None:
    risk = service()
    for n in range(6):
        await risk.evaluate(TENANT, request(f"t{n}"), T0)
    other = await risk.evaluate("ten_b", request("t0"), T0)
    assert not other.replayed
    assert factor(other.answer(), "card_velocity")["value"] == 1
    assert factor(other.answer(), "first_seen_card")["value"] is True
    with pytest.raises(NotFound):
        await risk.decision(
            "ten_b", (await risk.evaluate(TENANT, request("t0"), T0)).record.trace_id
        )


async def test_replay_reproduces_with_the_stored_policy_version() -> None:
    risk = service()
    results = [await risk.evaluate(TENANT, request(f"t{n}"), T0 + n) for n in range(7)]
    await risk.apply_policy(TENANT, STRICT, actor="ops", now=T0 + 10)
    for result in results:
        replayed = await risk.replay(TENANT, result.record.trace_id)
        assert replayed.reproduced
        assert replayed.replayed == result.record.decision
        assert replayed.to_dict()["reproduced"] is True
    with pytest.raises(NotFound):
        await risk.replay(TENANT, "trc_unknown")


async def test_replay_notices_a_decision_that_does_not_follow_from_its_inputs() -> None:
    decisions = MemoryDecisionStore()
    risk = service(decisions=decisions)
    record = (await risk.evaluate(TENANT, request("t1"), T0)).record
    tampered = replace(record, trace_id="trc_tampered", transaction_id="t2",
                       decision=replace(record.decision, score=0, decision="approve",
                                        reasons=()))  # fmt: skip
    await decisions.put(tampered)
    result = await risk.replay(TENANT, "trc_tampered")
    assert not result.reproduced
    assert result.replayed == record.decision


async def test_applying_a_policy_versions_it_and_audits() -> None:
    audit = RecordingAudit()
    risk = service(audit=audit)
    applied = await risk.apply_policy(TENANT, STRICT, actor="key:ops", now=T0)
    assert (await risk.policies.get_active(TENANT)).version == applied.version
    assert await risk.policies.get(TENANT, applied.version) == applied.policy
    assert await risk.policies.get("ten_b", applied.version) is None
    assert await risk.policies.get("ten_b", DEFAULT_POLICY.version) == DEFAULT_POLICY
    assert audit.records == [
        {
            "action": "risk.policy_applied",
            "actor": "key:ops",
            "tenant": TENANT,
            "resource": f"policy:{applied.version}",
            "details": {
                "version": applied.version,
                "previous_version": DEFAULT_POLICY.version,
                "factors": ["card_velocity", "big"],
            },
        }
    ]
    answer = (await risk.evaluate(TENANT, request(amount=6_000), T0)).answer()
    assert answer["policy_version"] == applied.version
    assert (answer["decision"], answer["score"]) == ("review", 30)
    with pytest.raises(PolicyRejected) as caught:
        await risk.apply_policy(TENANT, "review_threshold: 1", actor="key:ops", now=T0)
    assert (caught.value.status, caught.value.code) == (422, "policy_invalid")
    assert caught.value.errors[0] == FieldError(
        "decline_threshold",
        "line 1, column 1: decline_threshold is required "
        "(a policy needs review_threshold, decline_threshold, factors).",
    )
    assert caught.value.problems[0].line == 1
    assert len(audit.records) == 1
    history = await risk.policies.history(TENANT)
    assert [h.summary()["version"] for h in history] == [applied.version]


async def test_decisions_are_published_and_republished_after_a_failure() -> None:
    log = RecordingLog()
    risk = service(log=log)
    log.fail_next = 1
    with pytest.raises(StorageUnavailable):
        await risk.evaluate(TENANT, request("t1"), T0)
    assert log.appended == []
    # The retry finds the stored decision and publishes it: nothing is lost.
    retry = await risk.evaluate(TENANT, request("t1"), T0 + 1)
    assert retry.replayed
    ((topic, record),) = log.appended
    assert (topic, record.tenant, record.record_id) == (
        DECISIONS_TOPIC,
        TENANT,
        retry.record.trace_id,
    )
    payload = json.loads(record.payload)
    assert payload["trace_id"] == retry.record.trace_id
    assert payload["inputs"]["card_token"] == "tok_card1"
    await risk.evaluate(TENANT, request("t1"), T0 + 2)
    assert len(log.appended) == 1


async def test_processor_health_feeds_the_decision() -> None:
    health = ProcessorHealthMonitor()
    for n in range(40):
        health.observe(TENANT, event("acme", failure_category="processor_timeout"), T0 + n)
    risk = service(health=health)
    answer = (await risk.evaluate(TENANT, request(processor="acme"), T0 + 60)).answer()
    assert factor(answer, "processor_health")["triggered"]
    assert factor(answer, "processor_health")["value"] == "high"
    calm = (await risk.evaluate(TENANT, request("t2", processor="calm"), T0 + 60)).answer()
    assert factor(calm, "processor_health")["value"] is None


async def test_requests_come_from_validated_bodies() -> None:
    from strongroom.domain.risk import TRANSACTION

    body = TRANSACTION.validate_json(
        json.dumps({
            "transaction_id": "t1", "amount": 100, "currency": "EUR", "merchant_id_hash": "m",
            "card": {"token": "tok_x"}, "ip": "2001:DB8::1", "metadata": {"processor": "acme"},
        })
    )  # fmt: skip
    built = RiskRequest.from_body(body, CardRef("tok_x"), agent_verified=True, idempotency_key="k")
    assert (built.ip, built.processor, built.agent_verified, built.idempotency_key) == (
        "2001:db8::1", "acme", True, "k",
    )  # fmt: skip
