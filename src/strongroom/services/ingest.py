"""Event ingest: screen, validate, then append durably and idempotently.

Order matters: card data is refused before any validation error is made, so a
refused request never reaches a code path that might echo part of it;
validation errors name fields and never carry the input.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from itertools import repeat
from typing import Final, cast

from pydantic import ValidationError

from strongroom.domain import event_fast_path
from strongroom.domain.event_fast_path import (
    IngestedEvent,
    IngestedEvents,
    all_fast,
    ingested_event_ids,
)
from strongroom.domain.events import (
    PaymentEvent,
    is_batch_body,
    validate_batch_json,
    validate_event_json,
)
from strongroom.domain.topics import RAW, TOKENIZED
from strongroom.errors import FieldError, InvalidRequest, PayloadTooLarge
from strongroom.ports import AppendResult, EventLog, NewRecord
from strongroom.services.card_events import CardEvents
from strongroom.services.screening import screen_and_validate
from strongroom.services.tenant_settings import TenantSettingsService

#: Where events may carry a card number: only inside ``card``, which is tokenized.
CARD_FIELDS: Final = frozenset({"card.number", "events[].card.number"})
#: At least how much larger an event's stored form may be than what was sent:
#: ``card`` gains ``token``, ``last4``, ``brand`` and the expiry (about 75 bytes
#: at most) and ``signature`` becomes ``signature_verified``.
CARD_GROWTH: Final = 128

#: Called with each request's newly accepted events (not duplicates), after the commit.
AcceptedHook = Callable[[str, Sequence[IngestedEvent]], None]

_JSON_ERRORS: Final = frozenset({"json_invalid", "json_type"})
#: ``model_dump_json`` without its keyword handling and without decoding to text
#: and encoding back: the same bytes.
_TO_JSON: Final = PaymentEvent.__pydantic_serializer__.to_json


_PLAIN_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_KEY_MARKER: Final = "[key]"


def field_path(location: Sequence[int | str]) -> str:
    """``('events', 3, 'amount')`` → ``events[3].amount``.

    A segment that is not a plain name (a caller's own metadata key, say) is
    shown as ``<key>``: error bodies never echo what the caller sent.
    """
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
            continue
        if part == _KEY_MARKER:
            continue
        segment = part if _PLAIN_NAME.match(part) else "<key>"
        path += f".{segment}" if path else segment
    return path


def validation_errors(exc: ValidationError) -> tuple[FieldError, ...]:
    """Field errors without input values."""
    return tuple(
        FieldError(field_path(error["loc"]) or "body", error["msg"])
        for error in exc.errors(include_url=False, include_input=False, include_context=False)
    )


class IngestService:
    """Turns request bodies into committed records on ``payments.tokenized``
    (and, for events with a card, their sealed originals on ``payments.raw``)."""

    def __init__(
        self,
        log: EventLog,
        cards: CardEvents,
        settings: TenantSettingsService,
        *,
        max_event_bytes: int,
    ) -> None:
        self._log = log
        self._cards = cards
        self._settings = settings
        self._max_event_bytes = max_event_bytes
        #: Fed with committed events, for processor-health signals. It runs in
        #: memory and must not raise: the events are durable by then.
        self.on_accepted: AcceptedHook | None = None

    def parse(self, body: bytes, *, allow_batch: bool = True) -> tuple[IngestedEvents, bool]:
        """Screen and validate a body into its events and whether it was a batch.

        Raises:
            CardDataRefused, InvalidRequest, PayloadTooLarge.
        """
        batch = allow_batch and is_batch_body(body)
        validate = _validate_batch if batch else _validate_one
        try:
            events = screen_and_validate(body, validate, metadata_keys, card_fields=CARD_FIELDS)
        except ValidationError as exc:
            if exc.error_count() == 1 and exc.errors()[0]["type"] in _JSON_ERRORS:
                raise InvalidRequest(
                    "The request body must be a JSON object.",
                    (FieldError("body", "invalid JSON"),),
                ) from None
            raise InvalidRequest(
                "One or more events are invalid; nothing was accepted.",
                validation_errors(exc),
            ) from None
        return events, batch

    def to_records(self, tenant: str, events: IngestedEvents, batch: bool) -> list[NewRecord]:
        ids = ingested_event_ids(events)
        if all_fast(events):
            payloads = list(map(event_fast_path.to_json, events))
        else:
            payloads = [_TO_JSON(event, exclude_none=True) for event in events]
        keys = [event.partition_key for event in _each(events)]
        records = list(map(NewRecord, repeat(tenant), ids, keys, payloads))
        self._check_sizes(records, batch)
        return records

    def _check_sizes(self, records: list[NewRecord], batch: bool, *, headroom: int = 0) -> None:
        too_large: list[FieldError] = []
        for index, record in enumerate(records):
            if len(record.payload) + headroom > self._max_event_bytes:
                where = f"events[{index}]" if batch else "body"
                too_large.append(FieldError(where, f"event exceeds {self._max_event_bytes} bytes"))
        if too_large:
            raise PayloadTooLarge(
                "An event is over the size limit; nothing was accepted.", tuple(too_large)
            )

    async def _needs_protection(self, tenant: str, events: IngestedEvents) -> bool:
        """Cards to tokenize, signatures to check, or amounts the tenant wants signed."""
        if any(event.needs_vault for event in events):
            return True
        threshold = (await self._settings.get(tenant)).signature_required_above
        return threshold is not None and any((event.amount or 0) > threshold for event in events)

    async def ingest(self, tenant: str, body: bytes, *, allow_batch: bool = True) -> AppendResult:
        """Validate and durably append; returns accepted and duplicate event ids."""
        events, batch = self.parse(body, allow_batch=allow_batch)
        result = await self._append(tenant, body, events, batch)
        if self.on_accepted is not None and result.accepted:
            self.on_accepted(tenant, _first_of_each(events, result.accepted))
        return result

    async def _append(
        self, tenant: str, body: bytes, events: IngestedEvents, batch: bool
    ) -> AppendResult:
        records = self.to_records(tenant, events, batch)
        if not await self._needs_protection(tenant, events):
            return await self._log.append(TOKENIZED, records)
        # Refuse oversized events before any card reaches the vault: a tokenized
        # card takes at most CARD_GROWTH bytes more than the card as sent.
        self._check_sizes(records, batch, headroom=CARD_GROWTH)
        protected = await self._cards.protect(tenant, _payment_events(events, body, batch), batch)
        self._check_sizes(protected.tokenized, batch)
        if not protected.raw:
            return await self._log.append(TOKENIZED, protected.tokenized)
        tokenized, _ = await self._log.append_together(
            [(TOKENIZED, protected.tokenized), (RAW, protected.raw)]
        )
        return tokenized


def _validate_batch(body: bytes) -> IngestedEvents:
    fast = event_fast_path.decode_batch(body)
    return fast if fast is not None else validate_batch_json(body)


def _validate_one(body: bytes) -> IngestedEvents:
    fast = event_fast_path.decode_event(body)
    return [fast] if fast is not None else [validate_event_json(body)]


def _payment_events(events: IngestedEvents, body: bytes, batch: bool) -> list[PaymentEvent]:
    """``events`` as pydantic's, which carry everything card protection reads.

    Events from the fast path reach protection only when the tenant requires a
    signature at their amounts; pydantic accepts whatever the fast path did.
    """
    if all_fast(events):
        return validate_batch_json(body) if batch else [validate_event_json(body)]
    return cast("list[PaymentEvent]", events)


def metadata_keys(events: IngestedEvents) -> Iterator[str]:
    """The keys a valid event's sender chose: the schema is closed but for ``metadata``."""
    for event in events:
        if event.metadata:
            yield from event.metadata


def _each(events: IngestedEvents) -> Sequence[IngestedEvent]:
    """``events`` as one sequence type, for code that reads what both kinds have."""
    return events


def _first_of_each(events: IngestedEvents, ids: Sequence[str]) -> Sequence[IngestedEvent]:
    """The events stored under ``ids``: an id repeated in the batch was stored once."""
    if len(ids) == len(events):
        # Every event was stored (a repeat would have been a duplicate): no id
        # needs turning into text again to pick them out.
        return events
    wanted = set(ids)
    chosen: list[IngestedEvent] = []
    for event, event_id in zip(_each(events), ingested_event_ids(events), strict=True):
        if event_id in wanted:
            wanted.discard(event_id)
            chosen.append(event)
    return chosen
