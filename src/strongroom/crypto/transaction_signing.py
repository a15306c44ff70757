"""Transaction signatures: HMAC-SHA256 over every money field, canonically encoded.

The signed message (docs/formats.md) is the line ``strongroom-transaction-v1``
followed by a newline and the compact JSON object of exactly these members,
keys sorted, no whitespace, non-ASCII escaped::

    amount (integer, minor units), card (token, or the card number when the
    transaction carries the number), currency, merchant, transaction_id

The signature is ``v1=`` and the lowercase hex HMAC. Unlike Ruvon's recipe,
amount and merchant are covered: changing either breaks the signature.
Verification compares in constant time and says only yes or no.
"""

from __future__ import annotations

import hmac
import json
import secrets
from dataclasses import dataclass
from hashlib import sha256
from typing import Final

DOMAIN: Final = b"strongroom-transaction-v1\n"
SCHEME: Final = "v1="
SECRET_PREFIX: Final = "srsig_"  # noqa: S105 - a prefix, not a secret
SECRET_BYTES: Final = 32


@dataclass(frozen=True, slots=True)
class MoneyFields:
    """Everything a signature over a transaction covers."""

    transaction_id: str
    card: str
    amount: int
    currency: str
    merchant: str

    def canonical(self) -> bytes:
        document = {
            "amount": self.amount,
            "card": self.card,
            "currency": self.currency,
            "merchant": self.merchant,
            "transaction_id": self.transaction_id,
        }
        return DOMAIN + json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def new_signing_secret() -> str:
    """A fresh signing secret, as shown once to the tenant."""
    return SECRET_PREFIX + secrets.token_urlsafe(SECRET_BYTES)


def sign_transaction(secret: str, fields: MoneyFields) -> str:
    """The signature a client sends with a transaction."""
    digest = hmac.new(secret.encode(), fields.canonical(), sha256).hexdigest()
    return SCHEME + digest


def verify_transaction(secret: str, fields: MoneyFields, signature: str) -> bool:
    """True only when ``signature`` is this secret's signature over ``fields``."""
    expected = sign_transaction(secret, fields)
    return hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace"))
