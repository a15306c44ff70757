"""The key-management runbook: rotate the KEK, rewrap the data keys, raise the minimum
decryption version, re-encrypt the vault, on the local keyring and on OpenBao Transit.

Every test that opens data after a change does so through a freshly opened gateway
too, so no data key cached before the change can make it pass.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr
from vault_crypto_support import (
    SealedCopy,
    add_signing_secret,
    assert_all_open,
    audited,
    context,
    open_state,
    vault_some,
)

from strongroom.api.state import GatewayState
from strongroom.config import Settings
from strongroom.crypto.envelope import read_header
from strongroom.errors import DataUnreadable
from strongroom.ports import DataKeyRecord
from support_app import make_settings
from support_openbao import new_key_name

WRAPPING_PREFIX = {"local": "lk1", "vault": "vault"}


class SimulatedCrash(Exception):
    """Raised from a progress callback, as if the process died mid-run."""


@pytest.fixture(params=["local", "vault"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def gateway_settings(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """A gateway on the local keyring, or on a fresh Transit key of the shared OpenBao."""
    if backend == "vault":
        server = request.getfixturevalue("openbao")
        return make_settings(
            tmp_path, kms_url=server.kms_url(new_key_name()), vault_token=SecretStr(server.token)
        )
    return make_settings(tmp_path)


async def records_by_id(state: GatewayState) -> dict[str, DataKeyRecord]:
    found: dict[str, DataKeyRecord] = {}
    for tenant in await state.store.data_keys.tenants():
        found.update({r.dek_id: r for r in await state.store.data_keys.of_tenant(tenant)})
    return found


async def populate(state: GatewayState) -> list[SealedCopy]:
    """Two tenants with cards, raw events and a signing secret; the first tenant with a
    retired data key as well as its active one."""
    first = (await state.tenants.create("first")).id
    second = (await state.tenants.create("second")).id
    copies = await vault_some(state, first, seed=1)
    await state.data_keys.rotate_tenant(first)
    copies += await vault_some(state, first, seed=2)
    copies += await vault_some(state, second, seed=3)
    copies += [await add_signing_secret(state, first), await add_signing_secret(state, second)]
    return copies


async def test_rotation_wraps_new_data_keys_under_the_new_version(
    gateway_settings: Settings, backend: str
) -> None:
    async with open_state(gateway_settings) as state:
        old_tenant = (await state.tenants.create("before")).id
        copies = await vault_some(state, old_tenant, seed=1)
        (old,) = await state.store.data_keys.of_tenant(old_tenant)
        assert old.wrapped.startswith(f"{WRAPPING_PREFIX[backend]}:v1:")

        assert await state.key_rotation.rotate(actor="test") == 2

        status = await state.key_rotation.status()
        assert (status.kek.latest_version, status.kek.versions) == (2, (1, 2))
        assert status.kek.min_decryption_version == 1
        assert status.behind == 1
        new_tenant = (await state.tenants.create("after")).id
        copies += await vault_some(state, new_tenant, seed=2)
        (new,) = await state.store.data_keys.of_tenant(new_tenant)
        assert new.kek_version == 2
        assert new.wrapped.startswith(f"{WRAPPING_PREFIX[backend]}:v2:")
        # A tenant's next data key is wrapped under v2 too; its old one stays at v1.
        fresh_id = await state.data_keys.rotate_tenant(old_tenant)
        fresh = await state.store.data_keys.get(fresh_id)
        assert fresh is not None
        assert fresh.kek_version == 2
        retired = await state.store.data_keys.get(old.dek_id)
        assert retired is not None
        assert (retired.kek_version, retired.wrapped, retired.state) == (1, old.wrapped, "retired")
        assert (await state.key_rotation.status()).data_keys_by_version == {1: 1, 2: 2}
        assert await audited(state, "kms.rotated") == [{"kek_version": 2}]
    async with open_state(gateway_settings) as reopened:
        await assert_all_open(reopened.data_keys, copies)


async def test_rewrap_moves_every_data_key_and_the_old_wrappings_can_be_retired(
    gateway_settings: Settings,
) -> None:
    async with open_state(gateway_settings) as state:
        copies = await populate(state)
        before = await records_by_id(state)
        assert len(before) == 3
        await state.key_rotation.rotate(actor="test")
        assert (await state.key_rotation.status()).behind == 3

        seen: list[tuple[int, int]] = []
        moved = await state.key_rotation.rewrap(
            actor="test", progress=lambda done, total: seen.append((done, total))
        )

        assert moved == 3
        assert seen == [(1, 3), (2, 3), (3, 3)]
        status = await state.key_rotation.status()
        assert status.behind == 0
        assert status.data_keys_by_version == {2: 3}
        after = await records_by_id(state)
        assert after.keys() == before.keys()
        for dek_id, record in after.items():
            assert record.kek_version == 2
            assert record.wrapped != before[dek_id].wrapped
            # Only the wrapping moved: the tenant, state and seal counts are untouched.
            assert (record.tenant, record.state, record.reserved) == (
                before[dek_id].tenant,
                before[dek_id].state,
                before[dek_id].reserved,
            )
        await assert_all_open(state.data_keys, copies)

    async with open_state(gateway_settings) as state:
        await assert_all_open(state.data_keys, copies)
        await state.key_rotation.set_min_decryption_version(2, actor="test")

        key_manager = state.data_keys.key_manager
        for dek_id, old in before.items():
            with pytest.raises(DataUnreadable):
                await key_manager.unwrap(old.wrapped)
            assert len(await key_manager.unwrap(after[dek_id].wrapped)) == 32
        assert (await state.key_rotation.status()).kek.min_decryption_version == 2
        assert await audited(state, "kms.rewrapped") == [{"data_keys": 3, "kek_version": 2}]
        assert await audited(state, "kms.min_decryption_version_set") == [{"version": 2}]

    async with open_state(gateway_settings) as state:
        await assert_all_open(state.data_keys, copies)
        for copy in copies:
            if copy.kind == "token":
                card = await state.vault.detokenize(copy.tenant, copy.reference, actor="test")
                assert card.number.encode() == copy.plaintext


async def test_without_rewrap_the_minimum_version_makes_old_data_unreadable(
    gateway_settings: Settings,
) -> None:
    async with open_state(gateway_settings) as state:
        copies = await populate(state)
        await state.key_rotation.rotate(actor="test")
        await state.key_rotation.set_min_decryption_version(2, actor="test")

    async with open_state(gateway_settings) as state:
        for copy in copies:
            with pytest.raises(DataUnreadable):
                await state.data_keys.open(copy.sealed, copy.context)
        # Lowering it again is how an operator who skipped the rewrap recovers.
        await state.key_rotation.set_min_decryption_version(1, actor="test")

    async with open_state(gateway_settings) as state:
        await assert_all_open(state.data_keys, copies)


async def test_rewrap_is_idempotent(gateway_settings: Settings) -> None:
    async with open_state(gateway_settings) as state:
        copies = await populate(state)
        await state.key_rotation.rotate(actor="test")
        assert await state.key_rotation.rewrap(actor="test") == 3
        once = await records_by_id(state)

        assert await state.key_rotation.rewrap(actor="test") == 0

        assert await records_by_id(state) == once
        assert await audited(state, "kms.rewrapped") == [
            {"data_keys": 3, "kek_version": 2},
            {"data_keys": 0, "kek_version": 2},
        ]
        await assert_all_open(state.data_keys, copies)


async def test_rewrap_resumes_after_a_crash(gateway_settings: Settings) -> None:
    async with open_state(gateway_settings) as state:
        tenant = (await state.tenants.create("many-keys")).id
        sealed = []
        for index in range(7):
            sealed.append(await state.data_keys.seal(b"%d" % index, context(tenant, index)))
            await state.data_keys.rotate_tenant(tenant)
        await state.key_rotation.rotate(actor="test")
        assert (await state.key_rotation.status()).behind == 8

        def crash_after_three(done: int, total: int) -> None:
            if done == 3:
                raise SimulatedCrash

        with pytest.raises(SimulatedCrash):
            await state.key_rotation.rewrap(actor="test", progress=crash_after_three)

        assert (await state.key_rotation.status()).behind == 5

    async with open_state(gateway_settings) as state:
        assert await state.key_rotation.rewrap(actor="test") == 5
        assert (await state.key_rotation.status()).data_keys_by_version == {2: 8}
        await state.key_rotation.set_min_decryption_version(2, actor="test")

    async with open_state(gateway_settings) as state:
        for index, value in enumerate(sealed):
            assert await state.data_keys.open(value, context(tenant, index)) == b"%d" % index


async def test_rewrap_crosses_batches_and_resumes_mid_batch(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    async with open_state(settings) as state:
        tenant = (await state.tenants.create("batches")).id
        first = await state.data_keys.seal(b"first", context(tenant, 0))
        for _ in range(259):
            await state.data_keys.rotate_tenant(tenant)
        last = await state.data_keys.seal(b"last", context(tenant, 1))
        await state.key_rotation.rotate(actor="test")

        def crash_in_second_batch(done: int, total: int) -> None:
            if done == 230:
                raise SimulatedCrash

        with pytest.raises(SimulatedCrash):
            await state.key_rotation.rewrap(actor="test", progress=crash_in_second_batch)
        assert (await state.key_rotation.status()).behind == 30
        assert await state.key_rotation.rewrap(actor="test") == 30
        assert (await state.key_rotation.status()).data_keys_by_version == {2: 260}
        await state.key_rotation.set_min_decryption_version(2, actor="test")

    async with open_state(settings) as state:
        assert await state.data_keys.open(first, context(tenant, 0)) == b"first"
        assert await state.data_keys.open(last, context(tenant, 1)) == b"last"


async def test_reencrypt_reseals_the_vault_under_fresh_data_keys(
    gateway_settings: Settings,
) -> None:
    async with open_state(gateway_settings) as state:
        copies = await populate(state)
        old_keys = await records_by_id(state)
        await state.key_rotation.rotate(actor="test")

        resealed = await state.key_rotation.reencrypt(actor="test")

        vaulted = [copy for copy in copies if copy.kind in ("token", "secret")]
        assert resealed == len(vaulted) == 11
        for copy in vaulted:
            if copy.kind == "token":
                row = await state.store.tokens.get(copy.tenant, copy.reference)
                assert row is not None
                current = row.sealed_number
            else:
                secret = await state.store.secrets.get(copy.tenant, copy.reference)
                assert secret is not None
                current = secret.sealed
            active = await state.store.data_keys.active(copy.tenant)
            assert active is not None
            assert active.dek_id not in old_keys
            assert active.kek_version == 2
            assert read_header(current).dek_id == active.dek_id
            assert read_header(copy.sealed).dek_id != active.dek_id
            assert copy.holds(await state.data_keys.open(current, copy.context))
        for dek_id in old_keys:
            assert await state.store.tokens.sealed_with(dek_id, after=None, limit=10) == []
            assert await state.store.secrets.sealed_with(dek_id) == []
        assert await audited(state, "kms.reencrypted") == [{"tenants": 2, "values": 11}]

        # The retired keys stay for what still names them: stream records and old copies.
        assert (await records_by_id(state)).keys() >= old_keys.keys()
        await state.key_rotation.rewrap(actor="test")

    async with open_state(gateway_settings) as state:
        await state.key_rotation.set_min_decryption_version(2, actor="test")
        await assert_all_open(state.data_keys, copies)
        for copy in copies:
            if copy.kind == "token":
                card = await state.vault.detokenize(copy.tenant, copy.reference, actor="test")
                assert card.number.encode() == copy.plaintext
        actions = {
            action: await audited(state, action)
            for action in ("kms.rotated", "kms.reencrypted", "kms.rewrapped")
        }
        assert all(len(found) == 1 for found in actions.values()), actions
        # The two tenants' fresh keys were made under v2; the three older ones were moved.
        assert actions["kms.rewrapped"] == [{"data_keys": 3, "kek_version": 2}]
