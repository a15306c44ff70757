"""Fixtures for the card-vault tests: the app in process, and one OpenBao dev server.

The OpenBao server is started only by the tests that ask for it, once per session;
each of them uses a fresh Transit key name, so they never share a key.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from card_vault_support import VaultGateway, open_vault

from support_app import numbered_factory
from support_openbao import OpenBaoServer, openbao_server


@pytest.fixture
async def vault(tmp_path: Path) -> AsyncIterator[VaultGateway]:
    """The real app in process, lifespan entered, with the two configured operator keys."""
    async with open_vault(tmp_path) as opened:
        yield opened


@pytest.fixture
def make_vault(
    tmp_path: Path,
) -> Callable[..., contextlib.AbstractAsyncContextManager[VaultGateway]]:
    """``async with make_vault(detokenize_burst=2) as v``: the app on custom settings."""
    return numbered_factory(tmp_path, open_vault)


@pytest.fixture(scope="session")
def card_vault_openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBaoServer]:
    """One OpenBao dev server with ``transit/`` enabled (skips without ``bao``)."""
    with openbao_server(tmp_path_factory.mktemp("card-vault-openbao"), stop_timeout=0.5) as server:
        yield server
