"""Crypto-shredding: erasing a tenant destroys its data keys, so every copy of its
sealed values (exports, backups, consumed stream records) becomes unreadable, while
other tenants are untouched.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from vault_crypto_support import (
    SealedCopy,
    add_signing_secret,
    assert_all_open,
    audited,
    data_key_rows,
    open_state,
    vault_some,
)

from strongroom.config import Settings
from strongroom.crypto.envelope import SealContext
from strongroom.domain.topics import RAW, TOKENIZED
from strongroom.errors import DataUnreadable
from support_app import make_settings


@pytest.fixture
def gateway_settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


async def test_erasing_a_tenant_makes_every_copy_of_its_data_unreadable(
    gateway_settings: Settings,
) -> None:
    async with open_state(gateway_settings) as state:
        erased = (await state.tenants.create("to-be-erased")).id
        kept = (await state.tenants.create("kept")).id
        # The erased tenant has a retired data key as well as its active one.
        export = await vault_some(state, erased, seed=1)
        await state.data_keys.rotate_tenant(erased)
        export += await vault_some(state, erased, seed=2)
        export.append(await add_signing_secret(state, erased))
        others = await vault_some(state, kept, seed=3)
        others.append(await add_signing_secret(state, kept))
        keys_of_erased = len(await state.store.data_keys.of_tenant(erased))
        assert keys_of_erased == 2
        assert {copy.kind for copy in export} == {"token", "raw", "secret"}
        # The copies open before the erase: what follows is the erase's doing.
        await assert_all_open(state.data_keys, export + others)

        await state.tenants.erase(erased, actor="test")

        for copy in export:
            with pytest.raises(DataUnreadable):
                await state.data_keys.open(copy.sealed, copy.context)
        await assert_all_open(state.data_keys, others)
        assert await state.store.data_keys.of_tenant(erased) == []
        assert data_key_rows(gateway_settings.data_dir, erased) == 0
        assert data_key_rows(gateway_settings.data_dir, kept) == 1
        for copy in export:
            if copy.kind == "token":
                assert await state.store.tokens.get(erased, copy.reference) is None
        assert await state.store.secrets.get(erased, "transaction_signing") is None
        for topic in (TOKENIZED, RAW):
            assert await state.log.read(topic, tenant=erased, after=None, limit=10) == []
        (details,) = await audited(state, "tenant.erased")
        assert details["data_keys_destroyed"] == keys_of_erased
        assert details["tokens_erased"] == sum(copy.kind == "token" for copy in export)
        assert details["secrets_erased"] == 1

    # A gateway started afterwards (nothing cached) cannot open them either.
    async with open_state(gateway_settings) as state:
        for copy in export:
            with pytest.raises(DataUnreadable):
                await state.data_keys.open(copy.sealed, copy.context)
        await assert_all_open(state.data_keys, others)
        for copy in others:
            if copy.kind == "token":
                card = await state.vault.detokenize(kept, copy.reference, actor="test")
                assert card.number.encode() == copy.plaintext


async def test_a_copy_cannot_be_opened_as_another_tenant_after_the_erase(
    gateway_settings: Settings,
) -> None:
    async with open_state(gateway_settings) as state:
        erased = (await state.tenants.create("to-be-erased")).id
        kept = (await state.tenants.create("kept")).id
        export = await vault_some(state, erased, seed=1)
        await vault_some(state, kept, seed=2)
        await state.tenants.erase(erased, actor="test")

        # Presenting the copy in the surviving tenant's context does not help.
        for copy in export:
            moved = SealContext(
                kept, copy.context.place, copy.context.field, copy.context.record_id
            )
            with pytest.raises(DataUnreadable):
                await state.data_keys.open(copy.sealed, moved)


async def test_another_gateway_cannot_open_copies_after_the_erase(
    gateway_settings: Settings,
) -> None:
    # Other processes re-read a cached key's row every recheck period; shortened here.
    gateway_settings = gateway_settings.model_copy(update={"data_key_recheck_seconds": 0.2})
    async with open_state(gateway_settings) as eraser, open_state(gateway_settings) as other:
        erased = (await eraser.tenants.create("to-be-erased")).id
        export: list[SealedCopy] = await vault_some(eraser, erased, seed=1)
        await assert_all_open(other.data_keys, export)  # the other gateway has it cached

        await eraser.tenants.erase(erased, actor="test")
        await asyncio.sleep(0.3)

        for copy in export:
            with pytest.raises(DataUnreadable):
                await other.data_keys.open(copy.sealed, copy.context)
