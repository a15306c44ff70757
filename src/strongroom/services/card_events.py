"""Events that carry a card: tokenize before anything is stored, keep the original sealed.

For each event with ``card``:

1. ``card.number`` is validated (brand, length, Luhn, expiry) and tokenized;
   ``card.token`` must name one of the tenant's tokens.
2. A ``signature`` is checked over the money fields (the card reference is the
   number or token the client sent); above the tenant's threshold it is required.
3. The record on ``payments.tokenized`` carries ``card`` as
   ``{token, last4, brand, exp_month, exp_year}`` and ``signature_verified``;
   never the number or the signature.
4. The original event, as sent, is sealed whole (bound to tenant,
   ``payments.raw``, ``event`` and the event id) onto ``payments.raw``.

Problems of every event are collected first, so one refusal names them all and
nothing is stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import orjson

from strongroom.crypto.envelope import SealContext
from strongroom.crypto.transaction_signing import MoneyFields
from strongroom.domain.card_numbers import ValidCard
from strongroom.domain.events import PaymentEvent
from strongroom.domain.topics import RAW
from strongroom.errors import FieldError, InvalidRequest, NotFound, SignatureRejected
from strongroom.ports import NewRecord
from strongroom.services.data_keys import DataKeyService
from strongroom.services.tokens import TokenVault
from strongroom.services.transaction_signing import TransactionSigning

RAW_FIELD: Final = "event"


def raw_context(tenant: str, event_id: str) -> SealContext:
    return SealContext(tenant, RAW, RAW_FIELD, event_id)


@dataclass(frozen=True, slots=True)
class ProtectedEvents:
    tokenized: list[NewRecord]
    raw: list[NewRecord]


class CardEvents:
    def __init__(
        self, vault: TokenVault, signing: TransactionSigning, data_keys: DataKeyService
    ) -> None:
        self._vault = vault
        self._signing = signing
        self._data_keys = data_keys

    async def protect(
        self, tenant: str, events: list[PaymentEvent], batch: bool
    ) -> ProtectedEvents:
        """Records for both topics, or a refusal naming every problem.

        Raises:
            InvalidRequest: a card is invalid or a token unknown.
            SignatureRejected: a signature is missing where required, or wrong.
            KeyManagerUnavailable, StorageUnavailable: nothing was stored.
        """
        where = [f"events[{index}]." if batch else "" for index in range(len(events))]
        valid: dict[int, ValidCard] = {}
        problems: list[FieldError] = []
        for index, event in enumerate(events):
            card = event.card
            if card is None or card.number is None:
                continue
            assert card.exp_month is not None
            assert card.exp_year is not None
            try:
                valid[index] = self._vault.validate(
                    card.number, card.exp_month, card.exp_year, prefix=where[index] + "card."
                )
            except InvalidRequest as exc:
                problems.extend(exc.errors)
        known: dict[int, dict[str, object]] = {}
        for index, event in enumerate(events):
            if event.card is not None and event.card.token is not None:
                try:
                    stored = await self._vault.describe(tenant, event.card.token)
                except NotFound:
                    problems.append(FieldError(where[index] + "card.token", "unknown token"))
                    continue
                known[index] = {
                    "token": stored.token,
                    "last4": stored.last4,
                    "brand": stored.brand,
                    "exp_month": stored.exp_month,
                    "exp_year": stored.exp_year,
                }
        if problems:
            raise InvalidRequest(
                "One or more cards are invalid; nothing was accepted.", tuple(problems)
            )
        verified = {}
        for index, event in enumerate(events):
            verified[index] = await self._check_signature(tenant, event, where[index])
        tokenized: list[NewRecord] = []
        raw: list[NewRecord] = []
        for index, event in enumerate(events):
            document = event.model_dump(mode="json", exclude_none=True)
            event_id = str(event.event_id)
            if index in valid:
                vaulted = await self._vault.tokenize(tenant, valid[index])
                known[index] = {
                    "token": vaulted.token,
                    "last4": vaulted.last4,
                    "brand": vaulted.brand,
                    "exp_month": vaulted.exp_month,
                    "exp_year": vaulted.exp_year,
                }
            if event.card is not None:
                sealed = await self._data_keys.seal(
                    orjson.dumps(document), raw_context(tenant, event_id)
                )
                raw.append(
                    NewRecord(
                        tenant,
                        event_id,
                        event.partition_key,
                        orjson.dumps({"event_id": event_id, "sealed": sealed}),
                    )
                )
                document["card"] = known[index]
            document.pop("signature", None)
            if event.signature is not None:
                document["signature_verified"] = verified[index]
            tokenized.append(
                NewRecord(tenant, event_id, event.partition_key, orjson.dumps(document))
            )
        return ProtectedEvents(tokenized, raw)

    async def _check_signature(self, tenant: str, event: PaymentEvent, where: str) -> bool:
        card = event.card
        reference = "" if card is None else (card.token or card.number or "")
        fields = MoneyFields(
            transaction_id=str(event.event_id),
            card=reference,
            amount=event.amount or 0,
            currency=event.currency or "",
            merchant=event.merchant_id_hash or "",
        )
        try:
            return await self._signing.check(tenant, fields, event.signature)
        except SignatureRejected as exc:
            field = FieldError(where + "signature", exc.code.replace("_", " "))
            raise SignatureRejected(exc.code, exc.detail, (field,)) from None
