"""Each factor kind, triggering and not, with the sentence that explains it."""

from __future__ import annotations

from typing import Any

import pytest
from risk_support import facts, one_factor

from strongroom.domain.risk import Band, evaluate, validate_policy_text

CASES: list[tuple[str, str, dict[str, Any], str, dict[str, Any], str]] = [
    (
        "amount_above",
        "kind: amount_above\nlimits: {EUR: 100000, JPY: 5000}\ndefault: 20000",
        {"amount": 125_000},
        "The amount 1,250.00 EUR is above the limit of 1,000.00 EUR.",
        {"amount": 100_000},
        "The amount 1,000.00 EUR is within the limit of 1,000.00 EUR.",
    ),
    (
        "amount_above_default",
        "kind: amount_above\nlimits: {EUR: 100000}\ndefault: 20000",
        {"amount": 20_001, "currency": "USD"},
        "The amount 200.01 USD is above the limit of 200.00 USD.",
        {"amount": 9_000, "currency": "JPY"},
        "The amount 9,000 JPY is within the limit of 20,000 JPY.",
    ),
    (
        "velocity_count",
        "kind: velocity_count\nsubject: card\nwindow_seconds: 600\nthreshold: 5",
        {"velocity": {"only": 7}},
        "The card was used 7 times in the last 10 minutes, above the limit of 5.",
        {"velocity": {"only": 5}},
        "The card was used 5 times in the last 10 minutes, within the limit of 5.",
    ),
    (
        "velocity_count_merchant",
        "kind: velocity_count\nsubject: merchant\nwindow_seconds: 3600\nthreshold: 1000",
        {"velocity": {"only": 1001}},
        "The merchant had 1,001 transactions in the last hour, above the limit of 1,000.",
        {},
        "No merchant velocity was counted: the transaction has no merchant id.",
    ),
    (
        "velocity_amount",
        "kind: velocity_amount\nsubject: ip\nwindow_seconds: 86400\nthreshold: 50000",
        {"velocity": {"only": 50_001}},
        "The IP address spent 500.01 EUR in the last 24 hours, above the limit of 500.00 EUR.",
        {"velocity": {"only": 1}},
        "The IP address spent 0.01 EUR in the last 24 hours, within the limit of 500.00 EUR.",
    ),
    (
        "first_seen_card",
        "kind: first_seen_card",
        {"card_token": "tok_1", "first_seen_card": True},
        "The card has not been seen before.",
        {"card_token": "tok_1", "first_seen_card": False},
        "The card has been seen before.",
    ),
    (
        "country_not_allowed",
        "kind: country_not_allowed\nallowed: [DE, FR]",
        {"country": "BR"},
        "The transaction country BR is not on the allow list.",
        {"country": "FR"},
        "The transaction country FR is allowed.",
    ),
    (
        "country_not_allowed_unknown",
        "kind: country_not_allowed\nallowed: [DE]",
        {"country": "US"},
        "The transaction country US is not on the allow list.",
        {},
        "The transaction country is unknown, so the allow list was not applied.",
    ),
    (
        "currency_not_allowed",
        "kind: currency_not_allowed\nallowed: [EUR, GBP]",
        {"currency": "USD"},
        "The currency USD is not on the allow list.",
        {"currency": "GBP"},
        "The currency GBP is allowed.",
    ),
    (
        "country_mismatch",
        "kind: country_mismatch",
        {"card_country": "US", "country": "DE"},
        "The card was issued in US but the transaction is in DE.",
        {"card_country": "US"},
        "The card-issuing or the transaction country is unknown, so they were not compared.",
    ),
    (
        "country_match",
        "kind: country_mismatch",
        {"card_country": "FR", "country": "DE"},
        "The card was issued in FR but the transaction is in DE.",
        {"card_country": "DE", "country": "DE"},
        "The card was issued in DE, where the transaction is.",
    ),
    (
        "blocklist_token",
        "kind: blocklist\ntokens: [tok_bad]\nbins: ['411111']\ndevices: [dev_bad]",
        {"card_token": "tok_bad"},
        "The card token is on the blocklist.",
        {"card_token": "tok_good", "card_bin": "424242", "device_id": "dev_ok"},
        "Neither the card, its BIN nor the device is on the blocklist.",
    ),
    (
        "blocklist_bin",
        "kind: blocklist\nbins: ['411111']",
        {"card_bin": "41111111"},
        "The card's BIN is on the blocklist.",
        {"card_bin": "41111211"},
        "Neither the card, its BIN nor the device is on the blocklist.",
    ),
    (
        "blocklist_device",
        "kind: blocklist\ndevices: [dev_bad]",
        {"device_id": "dev_bad"},
        "The device is on the blocklist.",
        {"device_id": "dev_good"},
        "Neither the card, its BIN nor the device is on the blocklist.",
    ),
    (
        "unverified_agent",
        "kind: unverified_agent",
        {"agent_id": "agent_1", "agent_verified": False},
        "An agent sent the transaction without a verified signature.",
        {"agent_id": "agent_1", "agent_verified": True},
        "The agent's signature was verified.",
    ),
    (
        "unchecked_agent",
        "kind: unverified_agent",
        {"agent_id": "agent_1"},
        "An agent sent the transaction without a verified signature.",
        {},
        "No agent sent the transaction.",
    ),
    (
        "offline_floor_limit",
        "kind: offline_floor_limit\nfloor_limit: 5000",
        {"channel": "pos_offline", "amount": 7_500},
        "The offline transaction of 75.00 EUR is above the floor limit of 50.00 EUR.",
        {"channel": "offline", "amount": 5_000},
        "The offline transaction of 50.00 EUR is within the floor limit of 50.00 EUR.",
    ),
    (
        "offline_floor_limit_online",
        "kind: offline_floor_limit\nfloor_limit: 5000",
        {"channel": "offline", "amount": 5_001},
        "The offline transaction of 50.01 EUR is above the floor limit of 50.00 EUR.",
        {"channel": "web", "amount": 900_000},
        "The transaction was not made offline.",
    ),
    (
        "processor_health",
        "kind: processor_health\nmin_band: high",
        {"processor": "acme", "processor_band": Band.CRITICAL},
        "The processor acme is in the critical health band, at or above high.",
        {"processor": "acme", "processor_band": Band.ELEVATED},
        "The processor acme is in the elevated health band, below high.",
    ),
    (
        "processor_health_unknown",
        "kind: processor_health\nmin_band: elevated",
        {"processor": "acme", "processor_band": Band.ELEVATED},
        "The processor acme is in the elevated health band, at or above elevated.",
        {"processor": "acme"},
        "The processor or its health band is unknown.",
    ),
]


@pytest.mark.parametrize(
    ("factor", "hit", "hit_reason", "miss", "miss_reason"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_factor_triggers_and_explains(
    factor: str, hit: dict[str, Any], hit_reason: str, miss: dict[str, Any], miss_reason: str
) -> None:
    policy = one_factor(factor, weight=50)
    triggered = evaluate(policy, facts(**hit))
    (result,) = triggered.factors
    assert (result.triggered, result.contribution, result.reason) == (True, 50, hit_reason)
    assert (triggered.score, triggered.decision, triggered.reasons) == (50, "review", (hit_reason,))

    quiet = evaluate(policy, facts(**miss))
    (result,) = quiet.factors
    assert (result.triggered, result.contribution, result.reason) == (False, 0, miss_reason)
    assert (quiet.score, quiet.decision, quiet.reasons) == (0, "approve", ())


def test_the_merchant_subject_reads_its_observation() -> None:
    policy = one_factor("kind: velocity_count\nsubject: merchant\nwindow_seconds: 60\nthreshold: 1")
    (result,) = evaluate(policy, facts(velocity={"only": 1})).factors
    assert (
        result.reason == "The merchant had 1 transaction in the last minute, within the limit of 1."
    )


def test_values_and_thresholds_are_reported() -> None:
    policy = one_factor("kind: velocity_count\nsubject: device\nwindow_seconds: 7200\nthreshold: 3")
    (result,) = evaluate(policy, facts(velocity={"only": 4})).factors
    assert (result.name, result.kind, result.value, result.threshold, result.weight) == (
        "only", "velocity_count", 4, 3, 50,
    )  # fmt: skip
    assert result.reason == "The device was used 4 times in the last 2 hours, above the limit of 3."


SCORING = """\
review_threshold: 40
decline_threshold: 80
factors:
  - {name: small, kind: first_seen_card, weight: 10}
  - {name: mid, kind: country_mismatch, weight: 45}
  - {name: big, kind: unverified_agent, weight: 60}
  - {name: also_mid, kind: currency_not_allowed, allowed: [GBP], weight: 45}
"""


def test_contributions_are_capped_by_weight_order() -> None:
    policy = validate_policy_text(SCORING)
    decision = evaluate(
        policy,
        facts(card_token="t", first_seen_card=True, card_country="US", country="DE", agent_id="a"),
    )
    got = {f.name: (f.triggered, f.contribution) for f in decision.factors}
    # big (60) first, then also_mid and mid (45 each, by name): 60 + 40 = 100, the rest get 0.
    assert got == {
        "small": (True, 0),
        "mid": (True, 0),
        "big": (True, 60),
        "also_mid": (True, 40),
    }
    assert (decision.score, decision.decision) == (100, "decline")
    assert decision.reasons == (
        "An agent sent the transaction without a verified signature.",
        "The currency EUR is not on the allow list.",
    )


def test_thresholds_pick_the_decision() -> None:
    policy = validate_policy_text(SCORING)
    quiet = facts(card_token="t", first_seen_card=True, currency="GBP")
    assert (evaluate(policy, quiet).score, evaluate(policy, quiet).decision) == (10, "approve")
    assert evaluate(policy, facts(card_country="US", country="DE")).decision == "decline"
    decision = evaluate(policy, facts(card_country="US", country="DE", card_token="t",
                                      first_seen_card=True, currency="GBP", agent_id="a",
                                      agent_verified=True))  # fmt: skip
    assert (decision.score, decision.decision) == (55, "review")
    assert decision.reasons[0] == "The card was issued in US but the transaction is in DE."
