"""The payment event: PayFlux's schema, bounded and closed.

Rules this module guarantees:

1. Unknown fields are refused, at every level.
2. Every string has a length bound; ``metadata`` has at most 20 keys of at most
   64 characters, with values of at most 256 characters.
3. ``event_id`` is a UUID and ``event_timestamp`` an RFC 3339 time with an offset.
4. Types are strict: ``"3"`` is not a number and ``1`` is not a string.

A request body is either one event or ``{"events": [...]}`` with 1 to 100 events.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Final
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    model_validator,
)

MAX_BATCH: Final = 100
MAX_METADATA_KEYS: Final = 20
MAX_METADATA_KEY_LENGTH: Final = 64
MAX_METADATA_VALUE_LENGTH: Final = 256

# Labels and identifiers hold no control characters (PostgreSQL text refuses NUL,
# and no log line or CSV export should be split by a caller's newline).
_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
_NO_NUL = r"^[^\x00]*$"


def _text(max_length: int, *, min_length: int = 1, pattern: str | None = _PRINTABLE) -> object:
    return StringConstraints(min_length=min_length, max_length=max_length, pattern=pattern)


#: Whole-value patterns (anchored where they are declared) and text bounds,
#: shared with the fast decoder (``domain.event_fast_path``).
SLUG_PATTERN: Final = r"[a-z0-9][a-z0-9_.-]{0,63}"
CURRENCY_PATTERN: Final = r"[A-Z]{3}"
MAX_LABEL_LENGTH: Final = 64
MAX_HASH_LENGTH: Final = 128

Slug = Annotated[str, StringConstraints(pattern=f"^{SLUG_PATTERN}$")]
Label = Annotated[str, _text(MAX_LABEL_LENGTH)]
Hash = Annotated[str, _text(MAX_HASH_LENGTH)]
CurrencyCode = Annotated[str, StringConstraints(pattern=f"^{CURRENCY_PATTERN}$")]
Signature = Annotated[str, _text(128)]
CardNumber = Annotated[str, _text(32)]
CardToken = Annotated[str, _text(64)]
# Declared as constraints (not a validator) so the OpenAPI document states them too.
MetadataKey = Annotated[str, _text(MAX_METADATA_KEY_LENGTH)]
MetadataValue = Annotated[str, _text(MAX_METADATA_VALUE_LENGTH, min_length=0, pattern=_NO_NUL)]
Metadata = Annotated[dict[MetadataKey, MetadataValue], Field(max_length=MAX_METADATA_KEYS)]

# The same strings without the control-character patterns, for bodies that
# cannot hold a control character (see ``has_plain_strings``).
_PlainLabel = Annotated[str, _text(MAX_LABEL_LENGTH, pattern=None)]
_PlainHash = Annotated[str, _text(MAX_HASH_LENGTH, pattern=None)]
_PlainSignature = Annotated[str, _text(128, pattern=None)]
_PlainCardNumber = Annotated[str, _text(32, pattern=None)]
_PlainCardToken = Annotated[str, _text(64, pattern=None)]
_PlainMetadata = Annotated[
    dict[
        Annotated[str, _text(MAX_METADATA_KEY_LENGTH, pattern=None)],
        Annotated[str, _text(MAX_METADATA_VALUE_LENGTH, min_length=0, pattern=None)],
    ],
    Field(max_length=MAX_METADATA_KEYS),
]


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class EventCard(_Closed):
    """A card inside an event: a number to tokenize (with its expiry) or a known token.

    The number never reaches the stream: it is replaced by ``token``, ``last4``
    and ``brand`` before anything is stored.
    """

    number: CardNumber | None = None
    exp_month: int | None = None
    exp_year: int | None = None
    token: CardToken | None = None

    @model_validator(mode="after")
    def _number_or_token(self) -> EventCard:
        if self.token is not None:
            if self.number is not None or self.exp_month is not None or self.exp_year is not None:
                raise ValueError("send either a token or number, exp_month and exp_year")
        elif self.number is None or self.exp_month is None or self.exp_year is None:
            raise ValueError("a card needs number, exp_month and exp_year, or a token")
        return self


class PaymentEvent(_Closed):
    """One payment event, as PayFlux producers send it, plus optional amount data."""

    event_id: UUID
    event_type: Label
    event_timestamp: AwareDatetime
    processor: Slug
    merchant_id_hash: Hash | None = None
    payment_intent_id_hash: Hash | None = None
    failure_category: Label | None = None
    retry_count: Annotated[int, Field(ge=0, le=100)] = 0
    geo_bucket: Label | None = None
    amount_bucket: Label | None = None
    system_source: Label | None = None
    payment_method_bucket: Label | None = None
    channel: Label | None = None
    retry_result: Label | None = None
    failure_origin: Label | None = None
    amount: Annotated[int, Field(ge=0, le=10**15)] | None = None
    currency: CurrencyCode | None = None
    metadata: Metadata | None = None
    card: EventCard | None = None
    signature: Signature | None = None

    @property
    def needs_vault(self) -> bool:
        """True when the event carries a card or a signature to check."""
        return self.card is not None or self.signature is not None

    @property
    def partition_key(self) -> str:
        """Records of one merchant (else one processor) keep their relative order."""
        return self.merchant_id_hash or self.processor


class EventBatch(_Closed):
    """``{"events": [...]}``: one to a hundred events, accepted or refused together."""

    events: Annotated[list[PaymentEvent], Field(min_length=1, max_length=MAX_BATCH)]


class _PlainEventCard(EventCard):
    number: _PlainCardNumber | None = None
    token: _PlainCardToken | None = None


class _PlainPaymentEvent(PaymentEvent):
    """``PaymentEvent`` without the control-character patterns; same fields, same rules
    otherwise (a test holds the two schemas equal but for those patterns)."""

    event_type: _PlainLabel
    merchant_id_hash: _PlainHash | None = None
    payment_intent_id_hash: _PlainHash | None = None
    failure_category: _PlainLabel | None = None
    geo_bucket: _PlainLabel | None = None
    amount_bucket: _PlainLabel | None = None
    system_source: _PlainLabel | None = None
    payment_method_bucket: _PlainLabel | None = None
    channel: _PlainLabel | None = None
    retry_result: _PlainLabel | None = None
    failure_origin: _PlainLabel | None = None
    metadata: _PlainMetadata | None = None
    card: _PlainEventCard | None = None
    signature: _PlainSignature | None = None


class _PlainEventBatch(_Closed):
    events: Annotated[list[_PlainPaymentEvent], Field(min_length=1, max_length=MAX_BATCH)]


_BATCH_OPENING: Final = re.compile(rb'\A\s*\{\s*"events"\s*:')

_BATCH: Final[TypeAdapter[EventBatch]] = TypeAdapter(EventBatch)
_SINGLE_EVENT: Final[TypeAdapter[PaymentEvent]] = TypeAdapter(PaymentEvent)
_PLAIN_BATCH: Final[TypeAdapter[_PlainEventBatch]] = TypeAdapter(_PlainEventBatch)
_PLAIN_SINGLE_EVENT: Final[TypeAdapter[_PlainPaymentEvent]] = TypeAdapter(_PlainPaymentEvent)


_EVENT_IDS: Final[TypeAdapter[list[UUID]]] = TypeAdapter(list[UUID])


def event_ids(events: Sequence[PaymentEvent]) -> list[str]:
    """Each event's id in canonical text, as ``str(UUID)`` writes it.

    One call into pydantic-core for all of them: about a fifth of the time of
    ``str`` on each, which is Python code.
    """
    ids: list[str] = _EVENT_IDS.dump_python([event.event_id for event in events], mode="json")
    return ids


def is_batch_body(body: bytes) -> bool:
    """True when a body opens as ``{"events": ...}``.

    A batch body has exactly one member, ``events``; a single event never has
    it (unknown fields are refused). Deciding on the opening bytes keeps
    validation on pydantic's JSON fast path instead of parsing twice.
    """
    return _BATCH_OPENING.match(body) is not None


def has_plain_strings(body: bytes) -> bool:
    """True when no string of the JSON ``body`` can hold a control character.

    One reaches a string only through an escape (a backslash) or as a raw DEL:
    the JSON parser refuses raw U+0000-U+001F, and in UTF-8 the byte 0x7F is
    only ever DEL. Such bodies skip the per-string patterns, which took about a
    quarter of the time of validating a batch.
    """
    return b"\\" not in body and b"\x7f" not in body


def validate_batch_json(body: bytes) -> list[PaymentEvent]:
    """The events of a ``{"events": [...]}`` body.

    Raises:
        pydantic.ValidationError: naming each failing index and field.
    """
    if has_plain_strings(body):
        return list(_PLAIN_BATCH.validate_json(body).events)
    return _BATCH.validate_json(body).events


def validate_event_json(body: bytes) -> PaymentEvent:
    """The event of a one-event body.

    Raises:
        pydantic.ValidationError: naming each failing field.
    """
    if has_plain_strings(body):
        return _PLAIN_SINGLE_EVENT.validate_json(body)
    return _SINGLE_EVENT.validate_json(body)
