"""Helpers for the card-vault tests: test cards, an in-process gateway with admin keys,
and checks that a response never echoes the digits of a card number.

Configured keys (``STRONGROOM_API_KEYS``) are operators of tenant ``default``; they may
tokenize but not detokenize or change settings. Every test that needs those makes a
tenant and an admin key through the services, as ``strongroom keys create`` would.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import httpx

from strongroom.domain.cards import luhn_valid
from strongroom.domain.tenancy import Tenant
from support import bearer
from support_app import InProcessGateway, make_settings, read_pages, serving

TOKEN_PATTERN: Final = re.compile(r"^tok_[0-9A-Za-z]{24}$")
FINGERPRINT_PATTERN: Final = re.compile(r"^[0-9a-f]{32}$")
TOKENIZED: Final = "payments.tokenized"
RAW: Final = "payments.raw"
#: Failed-authentication limits high enough never to interfere.
UNTHROTTLED_IP: Final[dict[str, Any]] = {
    "ip_ratelimit_rps": 10_000.0,
    "ip_ratelimit_burst": 100_000,
}


def with_check_digit(prefix: str) -> str:
    """``prefix`` and the one digit that makes it pass the Luhn check."""
    for digit in "0123456789":
        if luhn_valid(prefix + digit):
            return prefix + digit
    raise AssertionError(prefix)


def luhn_broken(number: str) -> str:
    """``number`` with its check digit changed, so only the Luhn rule fails."""
    last = str((int(number[-1]) + 1) % 10)
    broken = number[:-1] + last
    assert not luhn_valid(broken)
    return broken


#: Well-known test numbers, one per brand, each Luhn-valid and of a length the brand issues.
CARDS: Final[dict[str, str]] = {
    "visa": "4111111111111111",
    "mastercard": "5555555555554444",
    "amex": "378282246310005",
    "discover": "6011111111111117",
    "jcb": "3530111333300000",
    "diners": "30569309025904",
    "maestro": "6759649826438453",
    "unionpay": with_check_digit("621700000000000000"),
}
assert all(luhn_valid(number) for number in CARDS.values())


def today() -> datetime:
    """Now in UTC: the vault decides expiry on the UTC date."""
    return datetime.now(UTC)


def valid_expiry() -> tuple[int, int]:
    """An expiry (month, year) a few years ahead."""
    return 12, today().year + 3


def card(number: str, **overrides: Any) -> dict[str, Any]:
    """A tokenize body for ``number`` with a valid expiry."""
    month, year = valid_expiry()
    return {"number": number, "exp_month": month, "exp_year": year, **overrides}


def digit_runs(number: str, length: int = 4) -> set[str]:
    """Every run of ``length`` consecutive digits of ``number`` (non-digits dropped)."""
    digits = "".join(char for char in number if char.isascii() and char.isdigit())
    return {digits[i : i + length] for i in range(len(digits) - length + 1)}


#: Headers whose values are the gateway's own numbers (random ids, sizes, limits, epoch
#: times, policy ages): any four digits may turn up in them by chance.
_OWN_NUMBER_HEADERS: Final = frozenset(
    {
        "x-request-id",
        "content-length",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "retry-after",
        "strict-transport-security",
    }
)


def without_own_numbers(response: httpx.Response) -> str:
    """The response's headers and body as text, the gateway's own numbers left out (the
    request id, sizes, rate-limit counters and times)."""
    headers = [
        f"{k}: {v}" for k, v in response.headers.items() if k.lower() not in _OWN_NUMBER_HEADERS
    ]
    try:
        body = response.json()
    except ValueError:
        return "\n".join([*headers, response.text])
    if isinstance(body, dict):
        body.pop("request_id", None)
    return "\n".join([*headers, json.dumps(body, ensure_ascii=False)])


def assert_echoes_no_digits_of(response: httpx.Response, number: str) -> None:
    """Neither the body nor a header (but those of the gateway's own numbers) holds any
    four consecutive digits of ``number``."""
    text = without_own_numbers(response)
    echoed = sorted(run for run in digit_runs(number) if run in text)
    assert not echoed, f"the response echoes digits of the card number {echoed}: {text}"


def field_errors(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(entry["field"], entry["message"]) for entry in body.get("errors", [])]


@dataclass
class Admin:
    """A tenant and an admin key of it (every scope but the platform's)."""

    tenant: Tenant
    secret: str
    key_id: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.secret)


@dataclass
class VaultGateway(InProcessGateway):
    """The app in process, with helpers for the token vault and its topics."""

    async def admin(self) -> Admin:
        """A fresh tenant with an admin key."""
        tenant = await self.tenant()
        issued = await self.key(tenant, "admin")
        return Admin(tenant, issued.secret, issued.record.id)

    async def tokenize(self, headers: dict[str, str], number: str, **body: Any) -> dict[str, Any]:
        """Tokenize ``number`` (valid expiry unless given); requires 200 or 201."""
        response = await self.http.post("/v1/tokens", json=card(number, **body), headers=headers)
        assert response.status_code in (200, 201), response.text
        result: dict[str, Any] = response.json()
        return result

    async def detokenize(self, headers: dict[str, str], token: str) -> httpx.Response:
        return await self.http.post("/v1/tokens/detokenize", json={"token": token}, headers=headers)

    async def topic(self, headers: dict[str, str], topic: str) -> list[dict[str, Any]]:
        return await read_pages(self.http, f"/v1/streams/{topic}", headers, what=topic)

    async def audit(self, headers: dict[str, str], action: str) -> list[dict[str, Any]]:
        return await read_pages(self.http, "/v1/audit", headers, params={"action": action})


def vault_settings(directory: Path, **overrides: Any) -> Any:
    return make_settings(directory, **{**UNTHROTTLED_IP, **overrides})


@contextlib.asynccontextmanager
async def open_vault(directory: Path, **overrides: Any) -> AsyncIterator[VaultGateway]:
    async with serving(vault_settings(directory, **overrides)) as (app, http):
        yield VaultGateway(app, http)
