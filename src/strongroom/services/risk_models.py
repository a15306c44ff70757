"""What risk evaluation takes and gives: requests, results, and their errors.

``RiskRequest`` is a transaction with its card already tokenized;
``Evaluation``, ``ReplayResult`` and ``ShadowDiff`` are what ``RiskService``
answers. ``fingerprint`` identifies a request's inputs, so a replay with other
inputs is refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import secrets
import string
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

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
from strongroom.services.expiring import ExpiringMap

TRACE_PREFIX: Final = "trc_"
TRACE_CHARS: Final = 24
#: Leading characters of a trace id that encode its time (milliseconds, base 62);
#: eight of them last until the year 8888.
TRACE_TIME_CHARS: Final = 8
TRACE_RANDOM_CHARS: Final = TRACE_CHARS - TRACE_TIME_CHARS
#: In ASCII order, so trace ids compare as their times do.
_BASE62: Final = string.digits + string.ascii_uppercase + string.ascii_lowercase
_DIGEST_HEX: Final = 32
#: Bytes drawn at a time: 8 in 256 are dropped, so 24 nearly always give 16 characters.
_TRACE_BYTES: Final = 24
_BASE62_BYTES: Final = bytes(ord(_BASE62[value % 62]) for value in range(256))
_UNUSED_BYTES: Final = bytes(range(4 * 62, 256))
#: As long as the token vault remembers a known card number (``services.tokens``).
KNOWN_CARD_SECONDS: Final = 5.0
MAX_KNOWN_CARDS: Final = 100_000


def new_trace_id(now: float) -> str:
    """``trc_``, the time ``now`` in 8 base62 characters, then 16 random ones (about 95 bits).

    Time first, so trace ids made later sort later: the stores index decisions
    and their stream records by trace id, and new ids then land at the end of
    those indexes instead of on a random page each. A page written per decision
    per index was most of what a durable evaluation cost the log writer. The
    random part alone keeps ids unguessable and, within one millisecond, unique.
    """
    stamp = ""
    value = max(0, int(now * 1000))
    for _ in range(TRACE_TIME_CHARS):
        value, digit = divmod(value, 62)
        stamp = _BASE62[digit] + stamp
    # Random bytes below 248 (four times 62) map onto base 62 uniformly; the
    # rest are dropped. One read of the system's CSPRNG almost always suffices,
    # at a fraction of the cost of big-integer arithmetic.
    chars = ""
    while len(chars) < TRACE_RANDOM_CHARS:
        chars += secrets.token_bytes(_TRACE_BYTES).translate(_BASE62_BYTES, _UNUSED_BYTES).decode()
    return TRACE_PREFIX + stamp + chars[:TRACE_RANDOM_CHARS]


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:_DIGEST_HEX]


def timestamp(now: float) -> str:
    """``2023-11-14T22:13:00.000Z``: UTC, milliseconds (truncated, as ``isoformat`` does)."""
    # Rounded to microseconds first, as datetime.fromtimestamp does, so stored
    # times read exactly as they always have.
    fraction, whole = math.modf(now)
    seconds, micros = int(whole), round(fraction * 1e6)
    if micros >= 1_000_000:
        seconds, micros = seconds + 1, micros - 1_000_000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{micros // 1000:03d}Z"


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
    """A card as risk sees it: its token, what may be shown of it, and where it was
    issued (ISO 3166 alpha-2) when the caller knows."""

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


class KnownCards:
    """Cards recently described by the token vault, by (tenant, token), for a few seconds.

    The evaluate route looks a token up in the vault on every request; with a
    few cards in heavy use that is one database read per evaluation for the
    same answer. Entries live ``KNOWN_CARD_SECONDS``, as the vault keeps known
    card numbers: a token purged (or a tenant erased) may still be evaluated
    for that long, nothing more, since risk never reads the number.
    """

    def __init__(self, *, max_cards: int = MAX_KNOWN_CARDS) -> None:
        if max_cards < 1:
            raise ValueError("max_cards must be at least 1")
        self._cards: ExpiringMap[tuple[str, str], CardRef] = ExpiringMap(
            ttl=KNOWN_CARD_SECONDS, max_entries=max_cards
        )
        self._loading: dict[tuple[str, str], asyncio.Future[CardRef]] = {}

    async def describe(
        self, tenant: str, token: str, now: float, load: Callable[[], Awaitable[CardRef]]
    ) -> CardRef:
        """The remembered card, else ``load()``'s, shared by every caller asking for
        the same token meanwhile (when an entry runs out under load, one read
        refreshes it, not one per request in flight).

        Raises:
            Whatever ``load`` raises, to every caller that waited for it.
        """
        known = self.get(tenant, token, now)
        if known is not None:
            return known
        key = (tenant, token)
        loading = self._loading.get(key)
        if loading is None:
            loading = asyncio.ensure_future(load())
            self._loading[key] = loading
            loading.add_done_callback(lambda done: self._loaded(key, done))
        # Shielded: one caller going away must not fail the read the others wait for.
        card = await asyncio.shield(loading)
        self.put(tenant, card, now)
        return card

    def _loaded(self, key: tuple[str, str], done: asyncio.Future[CardRef]) -> None:
        self._loading.pop(key, None)
        if not done.cancelled():
            # Read here so that a failure nobody waits for any more is not reported.
            done.exception()

    def get(self, tenant: str, token: str, now: float) -> CardRef | None:
        return self._cards.get((tenant, token), now)

    def put(self, tenant: str, card: CardRef, now: float) -> None:
        self._cards.put((tenant, card.token), card, now)

    def forget_tenant(self, tenant: str) -> None:
        self._cards.drop_where(lambda key: key[0] == tenant)


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
    if card is not None and card.country is not None:
        # Only when given, so decisions stored before the input existed keep their fingerprint.
        inputs["card_country"] = card.country
    # Byte for byte what json.dumps(sort_keys=True, separators=(",", ":"),
    # ensure_ascii=False) writes, at a fifth of the cost: stored fingerprints hold.
    return hashlib.sha256(orjson.dumps(inputs, option=orjson.OPT_SORT_KEYS)).hexdigest()
