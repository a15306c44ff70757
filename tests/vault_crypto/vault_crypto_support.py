"""Helpers for the field-encryption tests: a hand-driven clock, a key manager the test
controls, card numbers, and the gateway's services opened the way the CLI opens them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from strongroom.adapters.kms.vault import VaultTransitKeyManager
from strongroom.api.state import GatewayState, open_gateway
from strongroom.config import Settings
from strongroom.crypto.envelope import SealContext, read_header
from strongroom.domain.topics import RAW
from strongroom.observability.logging import get_logger
from strongroom.observability.metrics import Metrics
from strongroom.ports import AuditQuery, Clock, KekStatus, KeyManager, WrappedKey
from strongroom.services.card_events import raw_context
from strongroom.services.data_keys import DataKeyService
from strongroom.services.tokens import VAULT_TABLE
from strongroom.services.transaction_signing import SECRET_NAME, secret_context
from support import card_free_event
from support_database import connected

#: A fixed starting time, so a test's deadlines are plain arithmetic.
EPOCH: Final = 1_800_000_000.0
#: An expiry year every card drawn here is valid through.
EXP_YEAR: Final = datetime.now(UTC).year + 3

#: ``await connect_vault(server, key_name=None)``: a Transit key manager on that server.
ConnectVault = Callable[..., Awaitable[VaultTransitKeyManager]]


class ManualClock(Clock):
    """Time that moves only when the test says so."""

    def __init__(self, start: float = EPOCH) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds


class ControlledKeyManager(KeyManager):
    """Another key manager with switches: it counts unwraps and can hold one back.

    ``hold_next_unwrap()`` makes the next ``unwrap`` wait until the returned event is
    set; ``held`` is set once that call is waiting, so a test can order two coroutines
    without sleeping.
    """

    def __init__(self, inner: KeyManager) -> None:
        self.inner = inner
        self.unwraps = 0
        self.generated = 0
        self.held = asyncio.Event()
        self._holds: deque[asyncio.Event] = deque()

    def hold_next_unwrap(self) -> asyncio.Event:
        release = asyncio.Event()
        self._holds.append(release)
        return release

    async def generate_data_key(self) -> tuple[bytes, WrappedKey]:
        self.generated += 1
        return await self.inner.generate_data_key()

    async def unwrap(self, wrapped: str) -> bytes:
        self.unwraps += 1
        if self._holds:
            release = self._holds.popleft()
            self.held.set()
            await release.wait()
        return await self.inner.unwrap(wrapped)

    async def rewrap(self, wrapped: str) -> WrappedKey:
        return await self.inner.rewrap(wrapped)

    async def rotate(self) -> int:
        return await self.inner.rotate()

    async def status(self) -> KekStatus:
        return await self.inner.status()

    async def set_min_decryption_version(self, version: int) -> None:
        await self.inner.set_min_decryption_version(version)

    async def aclose(self) -> None:
        await self.inner.aclose()


def luhn_check_digit(partial: str) -> str:
    """The digit that makes ``partial`` + digit pass the Luhn check (computed here, not
    by the product)."""
    total = 0
    for index, char in enumerate(reversed(partial)):
        digit = int(char)
        if index % 2 == 0:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return str((10 - total % 10) % 10)


def visa_numbers(count: int, seed: int) -> list[str]:
    """``count`` distinct, Luhn-valid 16-digit Visa numbers."""
    rng = random.Random(seed)
    numbers: set[str] = set()
    while len(numbers) < count:
        partial = "4" + "".join(rng.choice("0123456789") for _ in range(14))
        numbers.add(partial + luhn_check_digit(partial))
    return sorted(numbers)


def context(tenant: str, index: int, place: str = "tests") -> SealContext:
    return SealContext(tenant, place, "value", f"record-{index}")


def token_context(tenant: str, token: str) -> SealContext:
    """Where the vault seals a card number."""
    return SealContext(tenant, VAULT_TABLE, "number", token)


def uses_by_key(sealed: Iterable[str]) -> Counter[str]:
    """How many of ``sealed`` each data key sealed, read from their headers."""
    return Counter(read_header(value).dek_id for value in sealed)


@contextlib.asynccontextmanager
async def open_state(settings: Settings) -> AsyncIterator[GatewayState]:
    """Store and services as the CLI opens them; closed (key manager too) on leaving."""
    state = await open_gateway(settings, Metrics(), get_logger("strongroom.tests"))
    try:
        yield state
    finally:
        await state.aclose()


def card_body(event: dict[str, Any], number: str) -> bytes:
    """``event`` carrying ``number`` as its card, as a request body."""
    return json.dumps(
        {**event, "card": {"number": number, "exp_month": 12, "exp_year": EXP_YEAR}}
    ).encode()


def data_key_rows(data_dir: Path, tenant: str) -> int:
    """Rows of ``tenant`` in the ``data_keys`` table, read around the product."""
    with connected(data_dir) as db:
        row = db.execute("SELECT count(*) FROM data_keys WHERE tenant = ?", (tenant,)).fetchone()
    assert row is not None
    return int(row[0])


@dataclass(frozen=True)
class SealedCopy:
    """A sealed value copied out of the store (an export, a backup), with what it holds.

    ``plaintext`` is the whole plaintext when ``exact``, else a part of it (a raw event
    holds its card number somewhere in its JSON).
    """

    kind: str
    tenant: str
    reference: str
    sealed: str
    context: SealContext
    plaintext: bytes
    exact: bool = True

    def holds(self, opened: bytes) -> bool:
        return opened == self.plaintext if self.exact else self.plaintext in opened


async def vault_some(
    state: GatewayState, tenant: str, *, seed: int, cards: int = 2, events: int = 1
) -> list[SealedCopy]:
    """Tokenize ``cards`` cards and ingest ``events`` events with a card for ``tenant``;
    returns copies of every sealed value that wrote: token rows (the events' cards are
    tokenized too) and ``payments.raw`` records."""
    numbers = visa_numbers(cards + events, seed)
    copies: list[SealedCopy] = []

    async def copy_token(number: str) -> None:
        row = await state.store.tokens.by_fingerprint(
            tenant, state.vault.fingerprint(tenant, number)
        )
        assert row is not None
        copies.append(
            SealedCopy(
                "token",
                tenant,
                row.token,
                row.sealed_number,
                token_context(tenant, row.token),
                number.encode(),
            )
        )

    for number in numbers[:cards]:
        await state.vault.tokenize(tenant, state.vault.validate(number, 12, EXP_YEAR))
        await copy_token(number)
    for number in numbers[cards:]:
        event = card_free_event()
        result = await state.ingest.ingest(tenant, card_body(event, number))
        assert result.accepted == (event["event_id"],)
        # The event's card was tokenized on the way in.
        await copy_token(number)
        for record in await state.log.read(RAW, tenant=tenant, after=None, limit=10_000):
            if record.record_id == event["event_id"]:
                sealed = json.loads(record.payload)["sealed"]
                copies.append(
                    SealedCopy(
                        "raw",
                        tenant,
                        record.record_id,
                        sealed,
                        raw_context(tenant, record.record_id),
                        number.encode(),
                        exact=False,
                    )
                )
    assert len(copies) == cards + 2 * events
    return copies


async def add_signing_secret(state: GatewayState, tenant: str) -> SealedCopy:
    """A transaction-signing secret for ``tenant`` and a copy of its sealed row."""
    secret = await state.signing.create_secret(tenant, actor="test")
    row = await state.store.secrets.get(tenant, SECRET_NAME)
    assert row is not None
    return SealedCopy(
        "secret", tenant, SECRET_NAME, row.sealed, secret_context(tenant, SECRET_NAME),
        secret.encode(),
    )  # fmt: skip


async def assert_all_open(data_keys: DataKeyService, copies: Iterable[SealedCopy]) -> None:
    for copy in copies:
        opened = await data_keys.open(copy.sealed, copy.context)
        assert copy.holds(opened), (copy.kind, copy.reference)


async def audited(state: GatewayState, action: str) -> list[dict[str, Any]]:
    """The details of every ``action`` record in the audit log, oldest first."""
    records = await state.audit.query(AuditQuery(action=action, limit=1000))
    return [dict(record.entry.details) for record in records]
