"""Evaluate a transaction against a policy: a decision that explains itself.

Rules this module guarantees (``tests/risk`` checks each):

1. ``evaluate`` is pure: no clock, no randomness, no I/O. The same policy and
   the same facts always give an equal ``Decision``.
2. Every factor of the policy appears in ``Decision.factors``, in policy order,
   with its observed value, threshold, weight, contribution and a sentence
   saying why it did or did not count.
3. Scoring: the factors that trigger are taken by weight, highest first (ties
   by name), and each contributes its weight, or what is left below 100 if
   that is less. Factors that do not trigger contribute 0. So the score is the
   sum of the contributions, and it is between 0 and 100.
4. ``reasons`` are the sentences of the factors whose contribution is above 0,
   by contribution (highest first), then name; each one names a factor that
   is in ``factors``.
5. The decision comes from the thresholds: ``decline`` when the score is at
   least ``decline_threshold``, else ``review`` when at least
   ``review_threshold``, else ``approve``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from strongroom.domain.risk import _words as words
from strongroom.domain.risk.bands import Band
from strongroom.domain.risk.policy import (
    AmountAbove,
    Blocklist,
    CountryMismatch,
    CountryNotAllowed,
    CurrencyNotAllowed,
    FirstSeenCard,
    OfflineFloorLimit,
    Policy,
    ProcessorHealth,
    UnverifiedAgent,
    VelocityAmount,
    VelocityCount,
)

DecisionName = Literal["approve", "review", "decline"]
Value = int | str | bool | None
MAX_SCORE: Final = 100


@dataclass(frozen=True, slots=True)
class Facts:
    """Everything a decision may depend on, already tokenized and hashed.

    ``velocity`` maps a velocity factor's name to what was observed for it (a
    count, or an amount sum in minor units), this transaction included.
    """

    transaction_id: str
    amount: int
    currency: str
    merchant_id_hash: str
    card_token: str | None = None
    card_bin: str | None = None
    card_country: str | None = None
    last4: str | None = None
    brand: str | None = None
    customer_ref_hash: str | None = None
    device_id: str | None = None
    ip_hash: str | None = None
    country: str | None = None
    channel: str | None = None
    agent_id: str | None = None
    agent_verified: bool | None = None
    processor: str | None = None
    processor_band: Band | None = None
    velocity: Mapping[str, int] = field(default_factory=dict)
    first_seen_card: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy: what a stored decision keeps as its inputs."""
        out: dict[str, Any] = {name: getattr(self, name) for name in _FACT_FIELDS}
        out["processor_band"] = None if self.processor_band is None else str(self.processor_band)
        out["velocity"] = dict(sorted(self.velocity.items()))
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Facts:
        """The inverse of ``to_dict``.

        Raises:
            ValueError: a field is missing, unknown or of the wrong type.
        """
        unknown = set(data) - set(_FACT_FIELDS)
        if unknown:
            raise ValueError(f"stored facts have unknown fields: {', '.join(sorted(unknown))}")
        values = dict(data)
        band = values.get("processor_band")
        values["processor_band"] = None if band is None else Band(band)
        velocity = values.get("velocity") or {}
        if not all(isinstance(k, str) and type(v) is int for k, v in velocity.items()):
            raise ValueError("stored velocity observations must map names to integers")
        values["velocity"] = dict(velocity)
        try:
            facts = cls(**values)
        except TypeError as exc:
            raise ValueError(f"stored facts are incomplete: {exc}") from None
        if type(facts.amount) is not int or not isinstance(facts.transaction_id, str):
            raise ValueError("stored facts need an integer amount and a transaction id")
        return facts


_FACT_FIELDS: Final = tuple(Facts.__dataclass_fields__)


@dataclass(frozen=True, slots=True)
class FactorResult:
    """How one factor of the policy judged the transaction."""

    name: str
    kind: str
    value: Value
    threshold: Value
    weight: int
    contribution: int
    triggered: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "value": self.value,
            "threshold": self.threshold,
            "weight": self.weight,
            "contribution": self.contribution,
            "triggered": self.triggered,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one evaluation, with everything needed to explain it."""

    decision: DecisionName
    score: int
    policy_version: str
    factors: tuple[FactorResult, ...]
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "score": self.score,
            "policy_version": self.policy_version,
            "factors": [factor.to_dict() for factor in self.factors],
            "reasons": list(self.reasons),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Decision:
        """The inverse of ``to_dict``.

        Raises:
            KeyError, TypeError, ValueError: ``data`` is not a stored decision.
        """
        decision = data["decision"]
        if decision not in ("approve", "review", "decline"):
            raise ValueError(f"unknown decision {decision!r}")
        return cls(
            decision=decision,
            score=int(data["score"]),
            policy_version=str(data["policy_version"]),
            factors=tuple(FactorResult(**factor) for factor in data["factors"]),
            reasons=tuple(str(reason) for reason in data["reasons"]),
        )


@dataclass(frozen=True, slots=True)
class _Check:
    triggered: bool
    value: Value
    threshold: Value
    reason: str


_COUNT_SUBJECT: Final = {
    "card": "The card was used {n}",
    "merchant": "The merchant had {n}",
    "device": "The device was used {n}",
    "ip": "The IP address was used {n}",
}
_AMOUNT_SUBJECT: Final = {
    "card": "The card spent {n}",
    "merchant": "The merchant took {n}",
    "device": "The device spent {n}",
    "ip": "The IP address spent {n}",
}
_SUBJECT_ID: Final = {
    "card": "card token",
    "merchant": "merchant id",
    "device": "device id",
    "ip": "IP address",
}


def _amount_above(factor: AmountAbove, facts: Facts) -> _Check:
    limit = factor.limit_for(facts.currency)
    shown = words.money(facts.amount, facts.currency)
    if limit is None:
        return _Check(False, facts.amount, None, f"No amount limit applies to {facts.currency}.")
    bound = words.money(limit, facts.currency)
    if facts.amount > limit:
        return _Check(
            True, facts.amount, limit, f"The amount {shown} is above the limit of {bound}."
        )
    return _Check(False, facts.amount, limit, f"The amount {shown} is within the limit of {bound}.")


def _velocity_missing(factor: VelocityCount | VelocityAmount) -> _Check:
    return _Check(
        False,
        None,
        factor.threshold,
        f"No {factor.subject} velocity was counted: the transaction has no "
        f"{_SUBJECT_ID[factor.subject]}.",
    )


def _velocity_count(factor: VelocityCount, facts: Facts) -> _Check:
    observed = facts.velocity.get(factor.name)
    if observed is None:
        return _velocity_missing(factor)
    count = words.transactions(observed) if factor.subject == "merchant" else words.times(observed)
    said = (
        _COUNT_SUBJECT[factor.subject].format(n=count)
        + f" in {words.window(factor.window_seconds)}"
    )
    if observed > factor.threshold:
        return _Check(
            True, observed, factor.threshold, f"{said}, above the limit of {factor.threshold:,}."
        )
    return _Check(
        False, observed, factor.threshold, f"{said}, within the limit of {factor.threshold:,}."
    )


def _velocity_amount(factor: VelocityAmount, facts: Facts) -> _Check:
    observed = facts.velocity.get(factor.name)
    if observed is None:
        return _velocity_missing(factor)
    spent = words.money(observed, facts.currency)
    said = (
        _AMOUNT_SUBJECT[factor.subject].format(n=spent)
        + f" in {words.window(factor.window_seconds)}"
    )
    bound = words.money(factor.threshold, facts.currency)
    if observed > factor.threshold:
        return _Check(True, observed, factor.threshold, f"{said}, above the limit of {bound}.")
    return _Check(False, observed, factor.threshold, f"{said}, within the limit of {bound}.")


def _first_seen_card(factor: FirstSeenCard, facts: Facts) -> _Check:
    if facts.card_token is None:
        return _Check(False, None, None, "The transaction carries no card.")
    if facts.first_seen_card:
        return _Check(True, True, None, "The card has not been seen before.")
    return _Check(False, False, None, "The card has been seen before.")


def _country_not_allowed(factor: CountryNotAllowed, facts: Facts) -> _Check:
    if facts.country is None:
        return _Check(
            False,
            None,
            None,
            "The transaction country is unknown, so the allow list was not applied.",
        )
    if factor.allows(facts.country):
        return _Check(
            False, facts.country, None, f"The transaction country {facts.country} is allowed."
        )
    return _Check(
        True,
        facts.country,
        None,
        f"The transaction country {facts.country} is not on the allow list.",
    )


def _currency_not_allowed(factor: CurrencyNotAllowed, facts: Facts) -> _Check:
    if factor.allows(facts.currency):
        return _Check(False, facts.currency, None, f"The currency {facts.currency} is allowed.")
    return _Check(
        True, facts.currency, None, f"The currency {facts.currency} is not on the allow list."
    )


def _country_mismatch(factor: CountryMismatch, facts: Facts) -> _Check:
    issued, where = facts.card_country, facts.country
    if issued is None or where is None:
        return _Check(
            False,
            issued,
            where,
            "The card-issuing or the transaction country is unknown, so they were not compared.",
        )
    if issued != where:
        return _Check(
            True,
            issued,
            where,
            f"The card was issued in {issued} but the transaction is in {where}.",
        )
    return _Check(
        False, issued, where, f"The card was issued in {issued}, where the transaction is."
    )


_BLOCKED: Final = {
    "token": "The card token is on the blocklist.",
    "bin": "The card's BIN is on the blocklist.",
    "device": "The device is on the blocklist.",
}


def _blocklist(factor: Blocklist, facts: Facts) -> _Check:
    matched = factor.match(facts.card_token, facts.card_bin, facts.device_id)
    if matched is None:
        return _Check(
            False, None, None, "Neither the card, its BIN nor the device is on the blocklist."
        )
    return _Check(True, matched, None, _BLOCKED[matched])


def _unverified_agent(factor: UnverifiedAgent, facts: Facts) -> _Check:
    if facts.agent_id is None:
        return _Check(False, None, None, "No agent sent the transaction.")
    if facts.agent_verified is True:
        return _Check(False, "verified", "verified", "The agent's signature was verified.")
    state = "unchecked" if facts.agent_verified is None else "unverified"
    return _Check(
        True, state, "verified", "An agent sent the transaction without a verified signature."
    )


def _offline_floor_limit(factor: OfflineFloorLimit, facts: Facts) -> _Check:
    if facts.channel is None or facts.channel not in factor.channels:
        return _Check(
            False, facts.amount, factor.floor_limit, "The transaction was not made offline."
        )
    shown = words.money(facts.amount, facts.currency)
    floor = words.money(factor.floor_limit, facts.currency)
    if facts.amount > factor.floor_limit:
        return _Check(
            True,
            facts.amount,
            factor.floor_limit,
            f"The offline transaction of {shown} is above the floor limit of {floor}.",
        )
    return _Check(
        False,
        facts.amount,
        factor.floor_limit,
        f"The offline transaction of {shown} is within the floor limit of {floor}.",
    )


def _processor_health(factor: ProcessorHealth, facts: Facts) -> _Check:
    band = facts.processor_band
    if facts.processor is None or band is None:
        return _Check(False, None, factor.min_band, "The processor or its health band is unknown.")
    name = facts.processor
    if band.at_least(factor.band):
        return _Check(
            True,
            str(band),
            factor.min_band,
            f"The processor {name} is in the {band} health band, at or above {factor.min_band}.",
        )
    return _Check(
        False,
        str(band),
        factor.min_band,
        f"The processor {name} is in the {band} health band, below {factor.min_band}.",
    )


_CHECKS: Final[dict[str, Callable[[Any, Facts], _Check]]] = {
    "amount_above": _amount_above,
    "velocity_count": _velocity_count,
    "velocity_amount": _velocity_amount,
    "first_seen_card": _first_seen_card,
    "country_not_allowed": _country_not_allowed,
    "currency_not_allowed": _currency_not_allowed,
    "country_mismatch": _country_mismatch,
    "blocklist": _blocklist,
    "unverified_agent": _unverified_agent,
    "offline_floor_limit": _offline_floor_limit,
    "processor_health": _processor_health,
}


def evaluate(policy: Policy, facts: Facts) -> Decision:
    """Score ``facts`` under ``policy`` and explain the result (rules 1–5 above)."""
    checks = [(factor, _CHECKS[factor.kind](factor, facts)) for factor in policy.factors]
    contributions: dict[str, int] = {}
    total = 0
    for factor, _ in sorted(
        ((f, c) for f, c in checks if c.triggered), key=lambda pair: (-pair[0].weight, pair[0].name)
    ):
        share = min(factor.weight, MAX_SCORE - total)
        contributions[factor.name] = share
        total += share
    results = tuple(
        FactorResult(
            name=factor.name,
            kind=factor.kind,
            value=check.value,
            threshold=check.threshold,
            weight=factor.weight,
            contribution=contributions.get(factor.name, 0),
            triggered=check.triggered,
            reason=check.reason,
        )
        for factor, check in checks
    )
    counted = sorted(
        (r for r in results if r.contribution > 0), key=lambda r: (-r.contribution, r.name)
    )
    decision: DecisionName
    if total >= policy.decline_threshold:
        decision = "decline"
    elif total >= policy.review_threshold:
        decision = "review"
    else:
        decision = "approve"
    return Decision(
        decision=decision,
        score=total,
        policy_version=policy.version,
        factors=results,
        reasons=tuple(r.reason for r in counted),
    )
