"""The Vault token is kept alive: renewed before its TTL runs out, for as long as
the gateway runs, and every case it cannot handle is logged with the time left.

Against the session's real OpenBao server, with tokens of a few seconds' TTL.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from kms.conftest import VAULT_TIMEOUT
from strongroom.adapters.kms.vault import VaultTransitKeyManager
from strongroom.adapters.kms.vault_token import TokenKeeper
from strongroom.errors import KeyManagerUnavailable
from support_app import make_settings, serving
from support_openbao import OpenBaoServer, new_key_name


class RecordingLog:
    """Collects ``(level, event, details)``; fails the test if a token shows up."""

    def __init__(self, secrets: list[str]) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []
        self._secrets = secrets

    def _record(self, level: str, event: str, details: dict[str, Any]) -> None:
        assert not any(secret in repr(details) for secret in self._secrets)
        self.lines.append((level, event, details))

    def info(self, event: str, **details: Any) -> None:
        self._record("info", event, details)

    def warning(self, event: str, **details: Any) -> None:
        self._record("warning", event, details)

    def error(self, event: str, **details: Any) -> None:
        self._record("error", event, details)

    def events(self) -> list[str]:
        return [event for _, event, _ in self.lines]


def _transit_policy(key_name: str) -> str:
    return "\n".join(
        f'path "transit/{path}" {{ capabilities = ["create", "read", "update"] }}'
        for path in (f"keys/{key_name}", f"datakey/plaintext/{key_name}", f"decrypt/{key_name}")
    )


@pytest.fixture
async def connect_with(
    openbao: OpenBaoServer,
) -> AsyncIterator[Callable[..., Any]]:
    """``await connect_with(token, key_name)``: a manager on that token, with its log."""
    opened: list[VaultTransitKeyManager] = []

    async def connect(token: str, key_name: str) -> tuple[VaultTransitKeyManager, RecordingLog]:
        log = RecordingLog([token, openbao.token])
        manager = await VaultTransitKeyManager.connect(
            openbao.kms_url(key_name),
            token,
            timeout=VAULT_TIMEOUT,
            ca_file=openbao.ca_file,
            log=log,
        )
        opened.append(manager)
        return manager, log

    try:
        yield connect
    finally:
        for manager in opened:
            await manager.aclose()


def _token_accepted(openbao: OpenBaoServer, token: str) -> bool:
    with openbao.admin(token) as client:
        return client.get("auth/token/lookup-self").status_code == 200


async def test_a_renewable_token_keeps_working_well_past_its_ttl(
    openbao: OpenBaoServer, connect_with: Callable[..., Any]
) -> None:
    key_name = new_key_name()
    policy = _transit_policy(key_name)
    # Renewal comes with a third of the TTL left: a second is margin enough on a busy box.
    kept = openbao.create_token(policy, ttl="3s", explicit_max_ttl="5m")
    left_alone = openbao.create_token(policy, ttl="3s", explicit_max_ttl="5m")
    manager, log = await connect_with(kept, key_name)
    expires_in = manager.credential_expires_in()
    assert expires_in is not None
    assert 0 < expires_in <= 3

    deadline = time.monotonic() + 7.5
    while time.monotonic() < deadline:
        await manager.generate_data_key()
        await asyncio.sleep(0.25)

    # Two and a half TTLs: the same token left alone has expired.
    assert not _token_accepted(openbao, left_alone)
    assert _token_accepted(openbao, kept)
    material, wrapped = await manager.generate_data_key()
    assert await manager.unwrap(wrapped.ciphertext) == material
    assert log.events().count("vault_token_renewed") >= 2
    renewed_ttls = [d["ttl_seconds"] for _, e, d in log.lines if e == "vault_token_renewed"]
    assert all(ttl == 3 for ttl in renewed_ttls)


async def test_a_token_at_its_maximum_ttl_is_reported_and_then_refused(
    openbao: OpenBaoServer, connect_with: Callable[..., Any]
) -> None:
    key_name = new_key_name()
    # Renewed at 4 s to the 9 s maximum; the next renewal, at 7.3 s, cannot extend it.
    token = openbao.create_token(_transit_policy(key_name), ttl="6s", explicit_max_ttl="9s")
    manager, log = await connect_with(token, key_name)

    deadline = time.monotonic() + 12
    while "vault_token_at_max_ttl" not in log.events() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert "vault_token_at_max_ttl" in log.events()
    (warning,) = [d for level, e, d in log.lines if e == "vault_token_at_max_ttl"]
    assert 0 <= warning["expires_in_seconds"] <= 3
    while (manager.credential_expires_in() or 0) > 0 and time.monotonic() < deadline + 3:
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)

    assert manager.credential_expires_in() == 0
    with pytest.raises(KeyManagerUnavailable):
        await manager.generate_data_key()


async def test_a_root_token_never_expires_and_is_not_renewed(
    openbao: OpenBaoServer, connect_with: Callable[..., Any]
) -> None:
    manager, log = await connect_with(openbao.token, new_key_name())

    assert manager.credential_expires_in() is None
    assert log.lines == []


async def test_a_token_that_cannot_be_renewed_is_reported_with_its_time_left(
    openbao: OpenBaoServer, connect_with: Callable[..., Any]
) -> None:
    key_name = new_key_name()
    token = openbao.create_token(_transit_policy(key_name), ttl="1h", renewable=False)
    manager, log = await connect_with(token, key_name)

    ((level, event, details),) = log.lines
    assert (level, event) == ("warning", "vault_token_not_renewable")
    assert 3500 <= details["expires_in_seconds"] <= 3600
    expires_in = manager.credential_expires_in()
    assert expires_in is not None
    assert 3500 <= expires_in <= 3600


async def test_a_token_denied_its_own_lookup_still_works_with_its_lifetime_unknown(
    openbao: OpenBaoServer, connect_with: Callable[..., Any]
) -> None:
    key_name = new_key_name()
    token = openbao.create_token(_transit_policy(key_name), no_default_policy=True)
    manager, log = await connect_with(token, key_name)

    assert log.events() == ["vault_token_lifetime_unknown"]
    assert manager.credential_expires_in() is None
    material, wrapped = await manager.generate_data_key()
    assert await manager.unwrap(wrapped.ciphertext) == material


async def test_a_failed_renewal_is_retried_until_one_succeeds() -> None:
    """Renewals answered 503 twice, then renewed: the keeper retries and carries on."""
    renewals = 0

    def vault(request: httpx.Request) -> httpx.Response:
        nonlocal renewals
        if request.url.path.endswith("/lookup-self"):
            return httpx.Response(200, json={"data": {"ttl": 1.5, "renewable": True}})
        renewals += 1
        if renewals <= 2:
            return httpx.Response(503, json={"errors": ["sealed"]})
        return httpx.Response(200, json={"auth": {"lease_duration": 60, "renewable": True}})

    log = RecordingLog([])
    client = httpx.AsyncClient(transport=httpx.MockTransport(vault), base_url="http://v/v1/")
    keeper = TokenKeeper(client, log=log, renew_after=0.1, min_retry_seconds=0.1)
    try:
        await keeper.start()
        deadline = time.monotonic() + 5
        while keeper.renewals == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        await keeper.aclose()
        await client.aclose()

    assert keeper.renewals == 1
    assert log.events() == [
        "vault_token_renewal_failed",
        "vault_token_renewal_failed",
        "vault_token_renewed",
    ]
    expires_in = keeper.expires_in()
    assert expires_in is not None
    assert 55 < expires_in <= 60


_EXPIRES_IN = "strongroom_kms_credential_expires_in_seconds"


async def _expires_in_metric(http: httpx.AsyncClient) -> float:
    text = (await http.get("/metrics")).text
    (line,) = [line for line in text.splitlines() if line.startswith(_EXPIRES_IN + " ")]
    return float(line.split()[1])


async def test_the_gateway_exports_the_tokens_time_left(
    openbao: OpenBaoServer, tmp_path: Path
) -> None:
    key_name = new_key_name()
    token = openbao.create_token(_transit_policy(key_name), ttl="1h")
    settings = make_settings(
        tmp_path, kms_url=openbao.kms_url(key_name), vault_token=SecretStr(token)
    )
    async with serving(settings) as (_, http):
        assert 3500 < await _expires_in_metric(http) <= 3600


async def test_a_gateway_on_the_local_keyring_exports_minus_one(tmp_path: Path) -> None:
    async with serving(make_settings(tmp_path)) as (_, http):
        assert await _expires_in_metric(http) == -1
