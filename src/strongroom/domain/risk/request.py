"""The body of ``POST /v1/transactions/evaluate``: closed, strict and bounded.

The same model reads the JSON lines of a shadow run (``policy test``), so a
sample transaction is exactly what a client would send.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Final

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter

from strongroom.domain.events import CurrencyCode, EventCard, Hash, Label, Metadata, Slug

MAX_AMOUNT: Final = 10**15

Identifier = Annotated[str, StringConstraints(min_length=1, max_length=128)]
CountryCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]


def _ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError("ip must be an IPv4 or IPv6 address") from None


IpAddress = Annotated[str, StringConstraints(min_length=2, max_length=45), AfterValidator(_ip)]


class TransactionCard(EventCard):
    """The card of a transaction: a number to tokenize or a known token, and optionally
    the country that issued it.

    Card numbers do not say where a card was issued (a brand's IIN ranges span
    the world; issuing countries come from BIN tables that acquirers and
    processors license), so the ``country_mismatch`` factor can only compare
    when the caller sends ``issuer_country``.
    """

    issuer_country: CountryCode | None = None


class TransactionRequest(BaseModel):
    """A transaction to evaluate. ``card`` is a number to tokenize or a known token."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    transaction_id: Identifier
    amount: Annotated[int, Field(ge=0, le=MAX_AMOUNT)]
    currency: CurrencyCode
    merchant_id_hash: Hash
    card: TransactionCard
    customer_ref_hash: Hash | None = None
    device_id: Identifier | None = None
    ip: IpAddress | None = None
    country: CountryCode | None = None
    channel: Label | None = None
    agent_id: Identifier | None = None
    processor: Slug | None = None
    metadata: Metadata | None = None


TRANSACTION: Final[TypeAdapter[TransactionRequest]] = TypeAdapter(TransactionRequest)
