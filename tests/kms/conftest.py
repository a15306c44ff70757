"""Fixtures for the key-manager tests: every backend behind one factory, and OpenBao.

One OpenBao dev server serves the whole session (``openbao``); each test gets
fresh Transit key names, so tests never see each other's keys. Backends are
built lazily, so the local tests neither start nor need OpenBao.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Protocol

import pytest

from strongroom.adapters.kms.local import LocalKeyManager
from strongroom.adapters.kms.vault import VaultTransitKeyManager
from strongroom.crypto.keyring import new_master_key, parse_master_key
from strongroom.ports import KeyManager
from support_openbao import OpenBaoServer, new_key_name, openbao_server

#: Per-request timeout of the Vault clients tests build: generous, a loaded CI box is slow.
VAULT_TIMEOUT = 5.0


class MakeKeyManager(Protocol):
    async def __call__(self, store: str = "default") -> KeyManager: ...


class ConnectVault(Protocol):
    async def __call__(
        self,
        key_name: str | None = None,
        *,
        server: OpenBaoServer | None = None,
        token: str | None = None,
        timeout: float = VAULT_TIMEOUT,
        url: str | None = None,
    ) -> VaultTransitKeyManager: ...


@pytest.fixture(scope="session")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBaoServer]:
    """One OpenBao dev server with ``transit/`` enabled, shared by the session."""
    with openbao_server(tmp_path_factory.mktemp("openbao")) as server:
        yield server


@pytest.fixture
def start_openbao(tmp_path: Path) -> Iterator[Callable[..., OpenBaoServer]]:
    """``start(tls=False)`` starts a short-lived dev server; each is killed at teardown."""
    numbers = itertools.count()
    with contextlib.ExitStack() as stack:

        def start(*, tls: bool = False) -> OpenBaoServer:
            work_dir = tmp_path / f"openbao-{next(numbers)}"
            # An in-memory dev server has nothing to flush: a quick stop keeps tests fast.
            return stack.enter_context(openbao_server(work_dir, tls=tls, stop_timeout=0.2))

        yield start


@pytest.fixture
async def connect_vault(openbao: OpenBaoServer) -> AsyncIterator[ConnectVault]:
    """``await connect_vault(key_name)``: a ``VaultTransitKeyManager`` on the session's
    server (or ``server``), with a fresh key unless named; all are closed at teardown."""
    opened: list[VaultTransitKeyManager] = []

    async def connect(
        key_name: str | None = None,
        *,
        server: OpenBaoServer | None = None,
        token: str | None = None,
        timeout: float = VAULT_TIMEOUT,
        url: str | None = None,
    ) -> VaultTransitKeyManager:
        server = server or openbao
        manager = await VaultTransitKeyManager.connect(
            url or server.kms_url(key_name or new_key_name()),
            server.token if token is None else token,
            timeout=timeout,
            ca_file=server.ca_file,
        )
        opened.append(manager)
        return manager

    try:
        yield connect
    finally:
        for manager in opened:
            await manager.aclose()


@pytest.fixture(params=["local", "local-master", "vault"])
async def make_key_manager(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[MakeKeyManager]:
    """``await make_key_manager(store)``: a new manager of the parametrized backend.

    Managers made with the same ``store`` name share their keys (one data dir, or
    one Transit key); different names never do.
    """
    backend: str = request.param
    master_key = parse_master_key(new_master_key()) if backend == "local-master" else None
    # Only the vault backend asks for (and so starts) the session's OpenBao server.
    server: OpenBaoServer | None = (
        request.getfixturevalue("openbao") if backend == "vault" else None
    )
    key_names: dict[str, str] = {}
    opened: list[KeyManager] = []

    async def make(store: str = "default") -> KeyManager:
        manager: KeyManager
        if server is None:
            manager = LocalKeyManager(tmp_path / "stores" / store, master_key)
        else:
            manager = await VaultTransitKeyManager.connect(
                server.kms_url(key_names.setdefault(store, new_key_name())),
                server.token,
                timeout=VAULT_TIMEOUT,
                ca_file=server.ca_file,
            )
        opened.append(manager)
        return manager

    try:
        yield make
    finally:
        for manager in opened:
            await manager.aclose()


@pytest.fixture
async def key_manager(make_key_manager: MakeKeyManager) -> KeyManager:
    """A fresh key manager of each backend (ids ``local``, ``local-master``, ``vault``)."""
    return await make_key_manager()
