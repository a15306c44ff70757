"""Keeps the gateway's Vault/OpenBao token alive for as long as the gateway runs.

A token with a TTL stops working when the TTL runs out, and with it every wrap
and unwrap. Operators are told to issue a periodic token (``-period=720h``);
renewed within each period, such a token never expires. This keeper does the
renewing, as Vault Agent would.

Rules:

1. At start, ``auth/token/lookup-self`` tells the TTL and whether the token is
   renewable. A token that never expires (TTL 0) needs nothing. A lookup the
   token's policy refuses leaves the lifetime unknown: logged, never fatal.
2. A renewable token is renewed (``auth/token/renew-self``) once two thirds of
   its TTL have passed, and again after every renewal, for as long as the
   process runs.
3. A failed renewal is retried after a third of the time left (between 1 and
   30 seconds), until the token has expired; then the keeper logs that and stops.
4. A renewal that no longer moves the expiry (the token reached its maximum
   TTL), and a token that cannot be renewed at all, are logged as warnings with
   the seconds left: the operator must issue a new token before then.
5. Nothing here logs or raises the token; answers are read for their lease
   durations only.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any, Final, Protocol

import httpx

#: Renew once this share of the TTL has passed.
RENEW_AFTER: Final = 2 / 3
MIN_RETRY_SECONDS: Final = 1.0
MAX_RETRY_SECONDS: Final = 30.0
#: A renewal that moves the expiry by less than this did not extend the token.
_NO_EXTENSION_SECONDS: Final = 1.0


class TokenLog(Protocol):
    """Where the keeper reports (a structlog logger fits)."""

    def info(self, event: str, **details: Any) -> Any: ...

    def warning(self, event: str, **details: Any) -> Any: ...

    def error(self, event: str, **details: Any) -> Any: ...


class _Quiet:
    def info(self, event: str, **details: Any) -> None:
        return None

    warning = error = info


class TokenKeeper:
    """Looks up the token's lifetime, then renews it in the background when it can."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        log: TokenLog | None = None,
        renew_after: float = RENEW_AFTER,
        min_retry_seconds: float = MIN_RETRY_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._log: TokenLog = log or _Quiet()
        self._renew_after = renew_after
        self._min_retry = min_retry_seconds
        self._monotonic = monotonic
        #: Monotonic time the token expires at; None when it never does or is unknown.
        self._expires_at: float | None = None
        self._task: asyncio.Task[None] | None = None
        #: Completed renewals, for diagnostics and tests.
        self.renewals = 0

    def expires_in(self) -> float | None:
        """Seconds until the token expires (0 once it has); None if it never does or is unknown."""
        if self._expires_at is None:
            return None
        return max(0.0, self._expires_at - self._monotonic())

    async def start(self) -> None:
        """Learn the token's lifetime; start renewing it if it expires and can be renewed."""
        try:
            response = await self._client.get("auth/token/lookup-self")
        except httpx.HTTPError as exc:
            self._log.warning("vault_token_lifetime_unknown", reason=type(exc).__name__)
            return
        data = _section(response, "data")
        if data is None:
            self._log.warning("vault_token_lifetime_unknown", reason=f"HTTP {response.status_code}")
            return
        ttl = _seconds(data.get("ttl"))
        if ttl is None:
            self._log.warning("vault_token_lifetime_unknown", reason="no TTL in the answer")
            return
        if ttl == 0:
            return
        self._expires_at = self._monotonic() + ttl
        if data.get("renewable") is not True:
            self._log.warning("vault_token_not_renewable", expires_in_seconds=round(ttl))
            return
        self._task = asyncio.create_task(self._keep(ttl), name="strongroom-vault-token")

    async def _keep(self, ttl: float) -> None:
        delay = ttl * self._renew_after
        while True:
            await asyncio.sleep(delay)
            left = self.expires_in() or 0.0
            if left <= 0:
                self._log.error("vault_token_expired")
                return
            lease = await self._renew()
            if lease is None:
                left = self.expires_in() or 0.0
                delay = min(MAX_RETRY_SECONDS, max(self._min_retry, left / 3))
                continue
            previous = self._expires_at or 0.0
            self._expires_at = self._monotonic() + lease
            self.renewals += 1
            if self._expires_at - previous < _NO_EXTENSION_SECONDS:
                self._log.warning("vault_token_at_max_ttl", expires_in_seconds=round(lease))
                return
            self._log.info("vault_token_renewed", ttl_seconds=round(lease))
            delay = lease * self._renew_after

    async def _renew(self) -> float | None:
        """The new lease in seconds, or None (logged) when the renewal failed."""
        try:
            response = await self._client.post("auth/token/renew-self", json={})
        except httpx.HTTPError as exc:
            self._log.warning("vault_token_renewal_failed", reason=type(exc).__name__)
            return None
        auth = _section(response, "auth")
        lease = None if auth is None else _seconds(auth.get("lease_duration"))
        if lease is None:
            self._log.warning("vault_token_renewal_failed", reason=f"HTTP {response.status_code}")
        return lease

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _section(response: httpx.Response, name: str) -> dict[str, Any] | None:
    if not response.is_success:
        return None
    try:
        section = response.json().get(name)
    except (ValueError, AttributeError):
        return None
    return section if isinstance(section, dict) else None


def _seconds(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return float(value)
