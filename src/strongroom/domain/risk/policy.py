"""The risk policy: thresholds and weighted factors, versioned by content.

Rules this module guarantees:

1. A policy is closed and strict at every level: unknown keys are refused,
   ``"3"`` is not a number and ``yes`` is not a string.
2. ``0 <= review_threshold < decline_threshold <= 100``; every weight is 0–100;
   factor names are unique.
3. ``Policy.version`` is the first 16 hex digits of the SHA-256 of the policy's
   canonical JSON (sorted keys, defaults filled in, allow and block lists
   sorted and deduplicated). Comments, key order, YAML or JSON, and list order
   in allow and block lists do not change it; any change of meaning does.
4. ``validate_policy_text`` accepts YAML or JSON and raises ``PolicyInvalid``
   whose errors each name the line and column of the offending source.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from functools import cached_property
from typing import Annotated, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)

from strongroom.domain.risk._source import (
    PolicyError,
    PolicyInvalid,
    SourceDocument,
    parse_source,
)
from strongroom.domain.risk.bands import Band

MAX_FACTORS: Final = 64
MAX_LIST_ENTRIES: Final = 100_000
MAX_WINDOW_SECONDS: Final = 31 * 24 * 3600
MAX_MINOR_UNITS: Final = 10**15
VERSION_HEX_DIGITS: Final = 16

FactorName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
Weight = Annotated[int, Field(ge=0, le=100)]
Threshold = Annotated[int, Field(ge=0, le=100)]
MinorUnits = Annotated[int, Field(ge=0, le=MAX_MINOR_UNITS)]
WindowSeconds = Annotated[int, Field(ge=1, le=MAX_WINDOW_SECONDS)]
CurrencyCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
CountryCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
Bin = Annotated[str, StringConstraints(pattern=r"^[0-9]{6,8}$")]
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Subject = Literal["card", "merchant", "device", "ip"]


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _sorted_unique(values: list[str]) -> list[str]:
    return sorted(set(values))


# Allow and block lists are sets: their order and repeats must not change the version.
_SortedUnique: Final = AfterValidator(_sorted_unique)


class _Factor(_Closed):
    name: FactorName
    weight: Weight


class AmountAbove(_Factor):
    """Triggers when the amount is above the limit of its currency (else ``default``)."""

    kind: Literal["amount_above"]
    limits: Annotated[dict[CurrencyCode, MinorUnits], Field(max_length=400)] = Field(
        default_factory=dict
    )
    default: MinorUnits | None = None

    def limit_for(self, currency: str) -> int | None:
        return self.limits.get(currency, self.default)


class VelocityCount(_Factor):
    """Triggers when the subject made more than ``threshold`` transactions in the window.

    The count includes the transaction being evaluated.
    """

    kind: Literal["velocity_count"]
    subject: Subject
    window_seconds: WindowSeconds
    threshold: Annotated[int, Field(ge=0, le=1_000_000)]


class VelocityAmount(_Factor):
    """Triggers when the subject's amounts in the transaction's currency, summed over
    the window (this transaction included), are above ``threshold`` minor units.
    """

    kind: Literal["velocity_amount"]
    subject: Subject
    window_seconds: WindowSeconds
    threshold: MinorUnits


class FirstSeenCard(_Factor):
    """Triggers when the tenant has not seen the card token before."""

    kind: Literal["first_seen_card"]


class CountryNotAllowed(_Factor):
    """Triggers when the transaction country is known and not in ``allowed``."""

    kind: Literal["country_not_allowed"]
    allowed: Annotated[list[CountryCode], Field(min_length=1, max_length=300), _SortedUnique]

    @cached_property
    def _allowed(self) -> frozenset[str]:
        return frozenset(self.allowed)

    def allows(self, country: str) -> bool:
        return country in self._allowed


class CurrencyNotAllowed(_Factor):
    """Triggers when the transaction currency is not in ``allowed``."""

    kind: Literal["currency_not_allowed"]
    allowed: Annotated[list[CurrencyCode], Field(min_length=1, max_length=400), _SortedUnique]

    @cached_property
    def _allowed(self) -> frozenset[str]:
        return frozenset(self.allowed)

    def allows(self, currency: str) -> bool:
        return currency in self._allowed


class CountryMismatch(_Factor):
    """Triggers when the card-issuing country and the transaction country are both
    known and differ: the request sent ``card.issuer_country`` and ``country``.
    """

    kind: Literal["country_mismatch"]


class Blocklist(_Factor):
    """Triggers when the card token, the card BIN or the device id is listed."""

    kind: Literal["blocklist"]
    tokens: Annotated[list[Identifier], Field(max_length=MAX_LIST_ENTRIES), _SortedUnique] = Field(
        default_factory=list
    )
    bins: Annotated[list[Bin], Field(max_length=MAX_LIST_ENTRIES), _SortedUnique] = Field(
        default_factory=list
    )
    devices: Annotated[list[Identifier], Field(max_length=MAX_LIST_ENTRIES), _SortedUnique] = Field(
        default_factory=list
    )

    @cached_property
    def _tokens(self) -> frozenset[str]:
        return frozenset(self.tokens)

    @cached_property
    def _bins(self) -> frozenset[str]:
        return frozenset(self.bins)

    @cached_property
    def _devices(self) -> frozenset[str]:
        return frozenset(self.devices)

    def match(self, token: str | None, bin_: str | None, device: str | None) -> str | None:
        """Which list matched first: ``"token"``, ``"bin"``, ``"device"``, or None."""
        if token is not None and token in self._tokens:
            return "token"
        if bin_ is not None and any(bin_[:n] in self._bins for n in (6, 7, 8)):
            return "bin"
        if device is not None and device in self._devices:
            return "device"
        return None


class UnverifiedAgent(_Factor):
    """Triggers when an agent id is present without a verified signature result."""

    kind: Literal["unverified_agent"]


class OfflineFloorLimit(_Factor):
    """Triggers when an edge transaction made offline is above the floor limit."""

    kind: Literal["offline_floor_limit"]
    floor_limit: MinorUnits
    channels: Annotated[
        list[Annotated[str, StringConstraints(min_length=1, max_length=64)]],
        Field(min_length=1, max_length=16),
        _SortedUnique,
    ] = Field(default_factory=lambda: ["offline", "pos_offline"])


class ProcessorHealth(_Factor):
    """Triggers when the transaction's processor is in ``min_band`` or worse."""

    kind: Literal["processor_health"]
    min_band: Literal["elevated", "high", "critical"] = "high"

    @property
    def band(self) -> Band:
        return Band(self.min_band)


Factor = Annotated[
    AmountAbove
    | VelocityCount
    | VelocityAmount
    | FirstSeenCard
    | CountryNotAllowed
    | CurrencyNotAllowed
    | CountryMismatch
    | Blocklist
    | UnverifiedAgent
    | OfflineFloorLimit
    | ProcessorHealth,
    Field(discriminator="kind"),
]

#: Every factor kind and the model that holds its parameters.
FACTOR_KINDS: Final[dict[str, type[_Factor]]] = {
    "amount_above": AmountAbove,
    "velocity_count": VelocityCount,
    "velocity_amount": VelocityAmount,
    "first_seen_card": FirstSeenCard,
    "country_not_allowed": CountryNotAllowed,
    "currency_not_allowed": CurrencyNotAllowed,
    "country_mismatch": CountryMismatch,
    "blocklist": Blocklist,
    "unverified_agent": UnverifiedAgent,
    "offline_floor_limit": OfflineFloorLimit,
    "processor_health": ProcessorHealth,
}


class Policy(_Closed):
    """A tenant's risk policy. ``version`` identifies its content."""

    description: Annotated[str, StringConstraints(max_length=500)] | None = None
    review_threshold: Threshold
    decline_threshold: Threshold
    factors: Annotated[list[Factor], Field(max_length=MAX_FACTORS)]

    # Cached properties rather than pydantic private attributes: those are read
    # through BaseModel.__getattr__, a few microseconds each, on every evaluation.
    @cached_property
    def version(self) -> str:
        """The content hash: 16 hex digits of the SHA-256 of the canonical JSON."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:VERSION_HEX_DIGITS]

    @cached_property
    def _velocity_factors(self) -> tuple[VelocityCount | VelocityAmount, ...]:
        return tuple(f for f in self.factors if isinstance(f, VelocityCount | VelocityAmount))

    def canonical_json(self) -> str:
        """The policy as JSON with sorted keys and no insignificant whitespace."""
        return json.dumps(
            self.model_dump(mode="json"),
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )

    def velocity_factors(self) -> list[VelocityCount | VelocityAmount]:
        return list(self._velocity_factors)


def _semantic_errors(policy: Policy) -> list[tuple[tuple[str | int, ...], str]]:
    """Rules a field-by-field schema cannot state, each with where it applies."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    if policy.review_threshold >= policy.decline_threshold:
        problems.append(
            (
                ("decline_threshold",),
                f"decline_threshold ({policy.decline_threshold}) must be greater than "
                f"review_threshold ({policy.review_threshold}).",
            )
        )
    first_index: dict[str, int] = {}
    for index, factor in enumerate(policy.factors):
        if factor.name in first_index:
            problems.append(
                (
                    ("factors", index, "name"),
                    f"factors[{index}].name: the name {factor.name!r} is already used by "
                    f"factors[{first_index[factor.name]}]; factor names must be unique.",
                )
            )
        else:
            first_index[factor.name] = index
    return problems


def _located(
    document: SourceDocument, problems: Sequence[tuple[tuple[str | int, ...], str]]
) -> list[PolicyError]:
    return [document.error(loc, message) for loc, message in problems]


def validate_policy_text(text: str) -> Policy:
    """Parse and validate a policy written in YAML or JSON.

    Raises:
        PolicyInvalid: the text is not a valid policy; each error names its
            line and column in ``text`` and says what is wrong.
    """
    document = parse_source(text)
    try:
        policy = Policy.model_validate(document.data)
    except ValidationError as exc:
        raise PolicyInvalid(document.validation_errors(exc, FACTOR_KINDS, Policy)) from None
    problems = _semantic_errors(policy)
    if problems:
        raise PolicyInvalid(_located(document, problems))
    return policy


DEFAULT_POLICY_TEXT: Final = """\
# Strongroom's default risk policy. Copy it, change it, and apply it with
# `strongroom policy apply`; `strongroom policy test` shows what would change.
description: Strongroom default policy
review_threshold: 40
decline_threshold: 80
factors:
  # More than 5 uses of one card in 10 minutes.
  - name: card_velocity
    kind: velocity_count
    subject: card
    window_seconds: 600
    threshold: 5
    weight: 35
  # More than 5,000.00 spent on one card in a day (in the transaction's currency).
  - name: card_amount_24h
    kind: velocity_amount
    subject: card
    window_seconds: 86400
    threshold: 500000
    weight: 25
  - name: device_velocity
    kind: velocity_count
    subject: device
    window_seconds: 3600
    threshold: 20
    weight: 20
  # Amounts in minor units: 2,500.00 EUR or USD, 2,000.00 GBP, 1,000.00 otherwise.
  - name: large_amount
    kind: amount_above
    limits:
      EUR: 250000
      USD: 250000
      GBP: 200000
    default: 100000
    weight: 25
  - name: first_seen_card
    kind: first_seen_card
    weight: 10
  - name: card_country_mismatch
    kind: country_mismatch
    weight: 15
  # Empty until the tenant lists what it refuses outright.
  - name: blocklist
    kind: blocklist
    tokens: []
    bins: []
    devices: []
    weight: 100
  - name: unverified_agent
    kind: unverified_agent
    weight: 30
  # Edge transactions approved offline above 50.00 need a second look.
  - name: offline_floor_limit
    kind: offline_floor_limit
    floor_limit: 5000
    weight: 40
  - name: processor_health
    kind: processor_health
    min_band: high
    weight: 15
"""

#: The policy every tenant starts with (there is no country allow list in it).
DEFAULT_POLICY: Final = validate_policy_text(DEFAULT_POLICY_TEXT)
