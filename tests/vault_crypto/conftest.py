"""Fixtures for the field-encryption tests: a real SQLite store, a manual clock, the
local keyring, and OpenBao dev servers (one shared, and private ones a test may stop).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from vault_crypto_support import ConnectVault, ManualClock

from strongroom.adapters.kms.local import LocalKeyManager
from strongroom.adapters.kms.vault import VaultTransitKeyManager
from strongroom.adapters.store import Store, open_store
from strongroom.config import Settings
from support_app import make_settings
from support_openbao import OpenBaoServer, new_key_name, openbao_server

#: Per-request limit of the Vault clients built here; a stopped server fails at once anyway.
VAULT_TIMEOUT = 5.0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store_settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
async def store(store_settings: Settings) -> AsyncIterator[Store]:
    """The real SQLite store (schema created), closed at teardown."""
    opened = await open_store(store_settings)
    try:
        yield opened
    finally:
        await opened.aclose()


@pytest.fixture
def local_kms(tmp_path: Path) -> LocalKeyManager:
    return LocalKeyManager(tmp_path / "keyring", None)


@pytest.fixture(scope="session")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBaoServer]:
    """One OpenBao dev server for the session; tests use fresh key names on it."""
    with openbao_server(tmp_path_factory.mktemp("vault-crypto-openbao")) as server:
        yield server


@pytest.fixture
def start_openbao(tmp_path: Path) -> Iterator[Callable[[], OpenBaoServer]]:
    """``start()``: a private dev server the test may stop; all are killed at teardown."""
    numbers = itertools.count()
    with contextlib.ExitStack() as stack:

        def start() -> OpenBaoServer:
            work_dir = tmp_path / f"openbao-{next(numbers)}"
            # An in-memory dev server has nothing to flush: a quick stop keeps tests fast.
            return stack.enter_context(openbao_server(work_dir, stop_timeout=0.2))

        yield start


@pytest.fixture
async def connect_vault() -> AsyncIterator[ConnectVault]:
    """``await connect_vault(server)``: a Transit key manager on a fresh key of ``server``."""
    opened: list[VaultTransitKeyManager] = []

    async def connect(server: OpenBaoServer, key_name: str | None = None) -> VaultTransitKeyManager:
        manager = await VaultTransitKeyManager.connect(
            server.kms_url(key_name or new_key_name()),
            server.token,
            timeout=VAULT_TIMEOUT,
            ca_file=server.ca_file,
        )
        opened.append(manager)
        return manager

    try:
        yield connect
    finally:
        for manager in opened:
            await manager.aclose()
