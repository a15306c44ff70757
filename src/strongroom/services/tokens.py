"""The token vault: card numbers in, tokens out; numbers only ever stored sealed.

Rules this service guarantees:

1. A token is ``tok_`` and 24 random base62 characters: never a digit string
   that could pass for a card number, and unrelated to the number.
2. The same card in the same tenant gets the same token, found by a keyed
   fingerprint (HMAC-SHA256 under a per-tenant key derived from the install's
   pepper; PCI DSS 3.5.1.1 forbids unkeyed hashes of PANs). Tenants never share
   tokens or fingerprints.
3. The number is stored only sealed, bound to (tenant, ``card_tokens``,
   ``number``, token); the response shows at most the first six and last four
   digits, the first six only where the tenant enabled them and the number has
   at least 15 digits (so at least five stay hidden).
4. Detokenizing and purging are audited; no number reaches the audit log.
5. Known cards are answered from a bounded in-memory map (fingerprint → token,
   never the number) for ``KNOWN_CARD_SECONDS``; a purge or erasure here
   clears it at once, one made by another gateway within that time.
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Final

from strongroom.crypto.envelope import SealContext
from strongroom.crypto.keyed_hash import keyed_hash
from strongroom.domain.card_numbers import CardInvalid, ValidCard, validate_card
from strongroom.errors import FieldError, InvalidRequest, NotFound
from strongroom.ports import CardToken, Clock, TokenRepository
from strongroom.services.audit import AuditTrail
from strongroom.services.data_keys import DataKeyService
from strongroom.services.expiring import ExpiringMap
from strongroom.services.tenant_settings import TenantSettingsService

TOKEN_PREFIX: Final = "tok_"  # noqa: S105 - a prefix, not a secret
TOKEN_RANDOM_CHARS: Final = 24
VAULT_TABLE: Final = "card_tokens"
_BASE62: Final = string.ascii_letters + string.digits
_FINGERPRINT_CONTEXT: Final = "strongroom card fingerprint v1:"
KNOWN_CARD_SECONDS: Final = 5.0
#: First six and last four shown together must still hide at least five digits.
MIN_DIGITS_FOR_BIN: Final = 15
KNOWN_CARD_LIMIT: Final = 100_000


def new_token() -> str:
    return TOKEN_PREFIX + "".join(secrets.choice(_BASE62) for _ in range(TOKEN_RANDOM_CHARS))


def is_token(value: str) -> bool:
    return (
        len(value) == len(TOKEN_PREFIX) + TOKEN_RANDOM_CHARS
        and value.startswith(TOKEN_PREFIX)
        and all(char in _BASE62 for char in value[len(TOKEN_PREFIX) :])
    )


@dataclass(frozen=True, slots=True)
class TokenizedCard:
    """What a caller may see of a vaulted card."""

    token: str
    last4: str
    brand: str
    exp_month: int
    exp_year: int
    fingerprint: str
    bin: str | None
    created: bool

    def public(self) -> dict[str, object]:
        shown: dict[str, object] = {
            "token": self.token,
            "last4": self.last4,
            "brand": self.brand,
            "exp_month": self.exp_month,
            "exp_year": self.exp_year,
            "fingerprint": self.fingerprint,
        }
        if self.bin is not None:
            shown["bin"] = self.bin
        return shown


@dataclass(frozen=True, slots=True)
class RevealedCard:
    token: str
    number: str
    exp_month: int
    exp_year: int
    brand: str


def card_problems(exc: CardInvalid, prefix: str = "") -> tuple[FieldError, ...]:
    return tuple(FieldError(prefix + problem.field, problem.message) for problem in exc.problems)


class TokenVault:
    """Tokenize, detokenize and purge cards of a tenant."""

    def __init__(
        self,
        tokens: TokenRepository,
        data_keys: DataKeyService,
        settings: TenantSettingsService,
        pepper: bytes,
        clock: Clock,
        audit: AuditTrail,
    ) -> None:
        self._tokens = tokens
        self._data_keys = data_keys
        self._settings = settings
        self._pepper = pepper
        self._clock = clock
        self._audit = audit
        self._fingerprint_keys: dict[str, bytes] = {}
        self._known: ExpiringMap[tuple[str, bytes], CardToken] = ExpiringMap(
            ttl=KNOWN_CARD_SECONDS, max_entries=KNOWN_CARD_LIMIT
        )

    def _recall(self, tenant: str, fingerprint: bytes) -> CardToken | None:
        return self._known.get((tenant, fingerprint), self._clock.now())

    def _remember(self, card: CardToken) -> None:
        self._known.put((card.tenant, card.fingerprint), card, self._clock.now())

    def forget_tenant(self, tenant: str) -> None:
        """Drop the tenant's remembered cards (its tokens were erased)."""
        self._known.drop_where(lambda key: key[0] == tenant)

    def fingerprint(self, tenant: str, number: str) -> bytes:
        key = self._fingerprint_keys.get(tenant)
        if key is None:
            key = keyed_hash(self._pepper, _FINGERPRINT_CONTEXT + tenant)
            self._fingerprint_keys[tenant] = key
        return keyed_hash(key, number)

    def validate(self, number: str, exp_month: int, exp_year: int, prefix: str = "") -> ValidCard:
        """Raises ``InvalidRequest`` naming each failing rule (never the digits)."""
        today = datetime.fromtimestamp(self._clock.now(), UTC).date()
        try:
            return validate_card(number, exp_month, exp_year, today=today)
        except CardInvalid as exc:
            raise InvalidRequest(
                "The card is not valid; nothing was stored.", card_problems(exc, prefix)
            ) from None

    async def tokenize(self, tenant: str, card: ValidCard) -> TokenizedCard:
        """The tenant's token for ``card``, creating it on first sight.

        Raises:
            KeyManagerUnavailable, StorageUnavailable: nothing was stored.
        """
        fingerprint = self.fingerprint(tenant, card.number)
        stored = self._recall(tenant, fingerprint)
        if stored is None:
            stored = await self._tokens.by_fingerprint(tenant, fingerprint)
        created = False
        if stored is None:
            token = new_token()
            sealed = await self._data_keys.seal(
                card.number.encode(), SealContext(tenant, VAULT_TABLE, "number", token)
            )
            stored = await self._tokens.insert(
                CardToken(
                    token=token,
                    tenant=tenant,
                    fingerprint=fingerprint,
                    sealed_number=sealed,
                    last4=card.last4,
                    bin6=card.bin6,
                    brand=card.brand.value,
                    exp_month=card.exp_month,
                    exp_year=card.exp_year,
                    created_at=self._clock.now(),
                )
            )
            created = stored.token == token
        elif (stored.exp_year, stored.exp_month) < (card.exp_year, card.exp_month):
            await self._tokens.update_expiry(tenant, stored.token, card.exp_month, card.exp_year)
            stored = replace(stored, exp_month=card.exp_month, exp_year=card.exp_year)
        self._remember(stored)
        settings = await self._settings.get(tenant)
        return TokenizedCard(
            token=stored.token,
            last4=stored.last4,
            brand=stored.brand,
            exp_month=stored.exp_month,
            exp_year=stored.exp_year,
            fingerprint=fingerprint[:16].hex(),
            bin=stored.bin6
            if settings.expose_bin and len(card.number) >= MIN_DIGITS_FOR_BIN
            else None,
            created=created,
        )

    async def describe(self, tenant: str, token: str) -> CardToken:
        """The stored token (number still sealed). Raises ``NotFound``."""
        stored = await self._tokens.get(tenant, token) if is_token(token) else None
        if stored is None:
            raise NotFound("No such token.")
        return stored

    async def detokenize(self, tenant: str, token: str, *, actor: str) -> RevealedCard:
        """The card number behind a token; audited.

        Raises:
            NotFound: no such token in this tenant.
            DataUnreadable: its data key was destroyed or is refused.
            KeyManagerUnavailable: the data key is not cached and the KMS is down.
        """
        stored = await self.describe(tenant, token)
        number = await self._data_keys.open(
            stored.sealed_number, SealContext(tenant, VAULT_TABLE, "number", stored.token)
        )
        await self._audit.record(
            "token.detokenized",
            actor=actor,
            tenant=tenant,
            resource=stored.token,
            details={"brand": stored.brand, "last4": stored.last4},
        )
        return RevealedCard(
            stored.token, number.decode(), stored.exp_month, stored.exp_year, stored.brand
        )

    async def purge(self, tenant: str, token: str, *, actor: str) -> None:
        """Delete a token and its sealed number. Raises ``NotFound``."""
        stored = await self._tokens.get(tenant, token) if is_token(token) else None
        if stored is None or not await self._tokens.delete(tenant, token):
            raise NotFound("No such token.")
        self._known.pop((tenant, stored.fingerprint))
        await self._audit.record("token.purged", actor=actor, tenant=tenant, resource=token)
