"""The ``KeyManager`` contract, run against every backend, then each backend's own duties.

A backend that passes the contract section is a key manager; the sections after
it check what only one backend promises (file modes and sealing for the local
keyring; URL, token and outage handling for Vault Transit).
"""

from __future__ import annotations

import base64
import socket
import stat
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from strongroom.adapters.kms.local import KEYRING_FILE, LocalKeyManager
from strongroom.adapters.kms.vault import (
    VaultKeyAddress,
    VaultTransitKeyManager,
    _translate,
    parse_vault_url,
)
from strongroom.crypto.keyring import Keyring, new_master_key, parse_master_key
from strongroom.errors import (
    ConfigurationError,
    Conflict,
    DataUnreadable,
    KeyManagerUnavailable,
    StrongroomError,
)
from strongroom.ports import KeyManager
from support_openbao import OpenBaoServer, new_key_name

MakeKeyManager = Callable[..., Awaitable[KeyManager]]
ConnectVault = Callable[..., Awaitable[VaultTransitKeyManager]]


def _altered(wrapped: str) -> str:
    """``wrapped`` with one character of its body changed (still in the alphabet)."""
    index = len(wrapped) - 10
    replacement = "A" if wrapped[index] != "A" else "B"
    return wrapped[:index] + replacement + wrapped[index + 1 :]


def _relabelled(wrapped: str, version: int) -> str:
    """``wrapped`` claiming to be under KEK ``version``."""
    prefix, _, rest = wrapped.partition(":v")
    return f"{prefix}:v{version}:{rest.partition(':')[2]}"


# -- the contract ---------------------------------------------------------------------


async def test_a_data_key_unwraps_to_the_same_32_bytes(key_manager: KeyManager) -> None:
    material, wrapped = await key_manager.generate_data_key()

    assert len(material) == 32
    assert await key_manager.unwrap(wrapped.ciphertext) == material


async def test_a_wrapping_hides_the_key_and_is_never_repeated(key_manager: KeyManager) -> None:
    first_key, first = await key_manager.generate_data_key()
    second_key, second = await key_manager.generate_data_key()
    rewrapped = await key_manager.rewrap(first.ciphertext)

    assert first_key != second_key
    assert first.ciphertext != second.ciphertext
    for encoded in (
        first_key.hex(),
        base64.b64encode(first_key).decode(),
        base64.urlsafe_b64encode(first_key).decode().rstrip("="),
    ):
        assert encoded not in first.ciphertext
    assert first_key not in first.ciphertext.encode()
    assert await key_manager.unwrap(rewrapped.ciphertext) == first_key


async def test_wrappings_name_the_latest_kek_version(key_manager: KeyManager) -> None:
    _, wrapped = await key_manager.generate_data_key()
    status = await key_manager.status()

    assert wrapped.kek_version == status.latest_version == 1
    assert status.min_decryption_version == 1
    assert status.versions == (1,)


async def test_status_names_the_backend_and_every_version(
    key_manager: KeyManager, request: pytest.FixtureRequest
) -> None:
    await key_manager.rotate()
    await key_manager.rotate()
    status = await key_manager.status()

    assert status.backend == request.node.callspec.id.removesuffix("-master")
    assert status.latest_version == 3
    assert status.versions == (1, 2, 3)
    assert status.min_decryption_version == 1


async def test_rotation_adds_a_version_for_new_wraps_and_keeps_old_ones(
    key_manager: KeyManager,
) -> None:
    old_key, old = await key_manager.generate_data_key()

    assert await key_manager.rotate() == 2
    new_key, new = await key_manager.generate_data_key()

    assert (await key_manager.status()).latest_version == 2
    assert (old.kek_version, new.kek_version) == (1, 2)
    assert await key_manager.unwrap(old.ciphertext) == old_key
    assert await key_manager.unwrap(new.ciphertext) == new_key


async def test_rewrap_moves_an_old_wrapping_to_the_latest_version(
    key_manager: KeyManager,
) -> None:
    material, old = await key_manager.generate_data_key()
    await key_manager.rotate()
    await key_manager.rotate()

    rewrapped = await key_manager.rewrap(old.ciphertext)

    assert rewrapped.kek_version == 3
    assert rewrapped.ciphertext != old.ciphertext
    assert await key_manager.unwrap(rewrapped.ciphertext) == material


async def test_rewrap_of_a_latest_wrapping_keeps_the_key(key_manager: KeyManager) -> None:
    material, wrapped = await key_manager.generate_data_key()

    rewrapped = await key_manager.rewrap(wrapped.ciphertext)

    assert rewrapped.kek_version == wrapped.kek_version == 1
    assert await key_manager.unwrap(rewrapped.ciphertext) == material


async def test_min_decryption_version_refuses_older_wrappings_only(
    key_manager: KeyManager,
) -> None:
    material, old = await key_manager.generate_data_key()
    await key_manager.rotate()
    rewrapped = await key_manager.rewrap(old.ciphertext)

    await key_manager.set_min_decryption_version(2)

    assert (await key_manager.status()).min_decryption_version == 2
    with pytest.raises(DataUnreadable):
        await key_manager.unwrap(old.ciphertext)
    with pytest.raises(DataUnreadable):
        await key_manager.rewrap(old.ciphertext)
    assert await key_manager.unwrap(rewrapped.ciphertext) == material
    fresh_key, fresh = await key_manager.generate_data_key()
    assert await key_manager.unwrap(fresh.ciphertext) == fresh_key


async def test_min_decryption_version_can_be_lowered_again(key_manager: KeyManager) -> None:
    material, old = await key_manager.generate_data_key()
    await key_manager.rotate()
    await key_manager.set_min_decryption_version(2)

    await key_manager.set_min_decryption_version(1)

    assert await key_manager.unwrap(old.ciphertext) == material


@pytest.mark.parametrize("version", [0, -1, 3, 100])
async def test_min_decryption_version_outside_the_versions_is_a_conflict(
    key_manager: KeyManager, version: int
) -> None:
    await key_manager.rotate()

    with pytest.raises(Conflict) as raised:
        await key_manager.set_min_decryption_version(version)

    assert not isinstance(raised.value, DataUnreadable)
    assert (await key_manager.status()).min_decryption_version == 1


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(_altered, id="altered"),
        pytest.param(lambda w: w[:-4], id="truncated"),
        pytest.param(lambda w: _relabelled(w, 2), id="relabelled"),
        pytest.param(lambda w: _relabelled(w, 7), id="unknown-version"),
        pytest.param(lambda w: "", id="empty"),
        pytest.param(lambda w: "garbage", id="garbage"),
        pytest.param(lambda w: "lk1:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", id="local-shaped"),
        pytest.param(lambda w: "vault:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", id="vault-shaped"),
    ],
)
async def test_a_tampered_wrapping_is_unreadable(
    key_manager: KeyManager, tamper: Callable[[str], str]
) -> None:
    _, wrapped = await key_manager.generate_data_key()
    await key_manager.rotate()

    with pytest.raises(DataUnreadable) as raised:
        await key_manager.unwrap(tamper(wrapped.ciphertext))
    with pytest.raises(DataUnreadable):
        await key_manager.rewrap(tamper(wrapped.ciphertext))

    assert str(raised.value) == "A data key cannot be unwrapped."


async def test_another_stores_wrapping_is_unreadable(make_key_manager: MakeKeyManager) -> None:
    ours = await make_key_manager("ours")
    theirs = await make_key_manager("theirs")
    _, wrapped = await theirs.generate_data_key()

    with pytest.raises(DataUnreadable):
        await ours.unwrap(wrapped.ciphertext)


async def test_managers_on_one_store_share_rotations(make_key_manager: MakeKeyManager) -> None:
    first = await make_key_manager()
    second = await make_key_manager()
    material, old = await first.generate_data_key()

    await first.rotate()
    _, new = await second.generate_data_key()
    await first.set_min_decryption_version(2)

    assert new.kek_version == 2
    assert (await second.status()).min_decryption_version == 2
    with pytest.raises(DataUnreadable):
        await second.unwrap(old.ciphertext)
    await first.set_min_decryption_version(1)
    assert await second.unwrap(old.ciphertext) == material


# -- the local keyring --------------------------------------------------------------------


@pytest.fixture
def master_key() -> bytes:
    return parse_master_key(new_master_key())


def _kek_encodings(keyring: Keyring) -> Iterator[bytes]:
    """Every KEK of ``keyring`` as raw bytes and in each text encoding a file might use."""
    for kek in keyring.versions.values():
        yield kek
        yield kek.hex().encode()
        yield base64.b64encode(kek).rstrip(b"=")
        yield base64.urlsafe_b64encode(kek).rstrip(b"=")


async def test_local_keyring_file_is_private(tmp_path: Path) -> None:
    manager = LocalKeyManager(tmp_path / "data", None)
    await manager.rotate()

    mode = stat.S_IMODE((tmp_path / "data" / KEYRING_FILE).stat().st_mode)

    assert mode == 0o600


async def test_local_manager_reloads_a_rotation_done_by_another(tmp_path: Path) -> None:
    first = LocalKeyManager(tmp_path, None)
    second = LocalKeyManager(tmp_path, None)
    _, old = await second.generate_data_key()

    assert await first.rotate() == 2

    _, new = await second.generate_data_key()
    assert (old.kek_version, new.kek_version) == (1, 2)
    assert (await second.status()).versions == (1, 2)


async def test_local_sealed_keyring_holds_no_kek_bytes(tmp_path: Path, master_key: bytes) -> None:
    manager = LocalKeyManager(tmp_path, master_key)
    await manager.rotate()
    raw = (tmp_path / KEYRING_FILE).read_bytes()

    keyring = Keyring.deserialize(raw, master_key)

    assert Keyring.is_sealed(raw)
    assert len(keyring.versions) == 2
    assert not any(encoded in raw for encoded in _kek_encodings(keyring))


async def test_local_wrong_or_missing_master_key_is_a_configuration_error(
    tmp_path: Path, master_key: bytes
) -> None:
    LocalKeyManager(tmp_path, master_key)

    with pytest.raises(ConfigurationError, match="does not open the keyring"):
        LocalKeyManager(tmp_path, parse_master_key(new_master_key()))
    with pytest.raises(ConfigurationError, match="STRONGROOM_MASTER_KEY"):
        LocalKeyManager(tmp_path, None)


async def test_local_plain_keyring_is_sealed_when_a_master_key_is_supplied(
    tmp_path: Path, master_key: bytes
) -> None:
    plain = LocalKeyManager(tmp_path, None)
    material, wrapped = await plain.generate_data_key()
    before = Keyring.deserialize((tmp_path / KEYRING_FILE).read_bytes(), None)

    sealed = LocalKeyManager(tmp_path, master_key)
    raw = (tmp_path / KEYRING_FILE).read_bytes()

    assert Keyring.is_sealed(raw)
    assert not any(encoded in raw for encoded in _kek_encodings(before))
    assert Keyring.deserialize(raw, master_key).versions == before.versions
    assert await sealed.unwrap(wrapped.ciphertext) == material


# -- Vault Transit: URLs and settings, without a server -----------------------------------


@pytest.mark.parametrize(
    ("url", "address"),
    [
        (
            "vault://127.0.0.1:8300/transit/keys/strongroom",
            VaultKeyAddress("http://127.0.0.1:8300", "transit", "strongroom"),
        ),
        (
            "vault://localhost/transit/keys/k",
            VaultKeyAddress("http://localhost:8200", "transit", "k"),
        ),
        (
            "vault://[::1]:8200/transit/keys/k",
            VaultKeyAddress("http://[::1]:8200", "transit", "k"),
        ),
        (
            "vault+https://vault.example.com/teams/payments/transit/keys/kek_1/",
            VaultKeyAddress("https://vault.example.com:8200", "teams/payments/transit", "kek_1"),
        ),
    ],
)
def test_vault_url_names_the_server_mount_and_key(url: str, address: VaultKeyAddress) -> None:
    assert parse_vault_url(url) == address


@pytest.mark.parametrize(
    "url",
    [
        "https://vault.example.com:8200/transit/keys/k",
        "vault+http://127.0.0.1:8200/transit/keys/k",
        "vault://127.0.0.1:8200/transit/k",
        "vault://127.0.0.1:8200/keys/k",
        "vault://127.0.0.1:8200/transit/keys/",
        "vault://127.0.0.1:8200/transit/keys/a/b",
        "vault://127.0.0.1:8200/../keys/k",
        "vault://127.0.0.1:port/transit/keys/k",
        "vault://127.0.0.1:8200/transit/keys/k?x=1",
        "vault://user:secret@127.0.0.1:8200/transit/keys/k",
        "vault:///transit/keys/k",
        "vault://vault.example.com:8200/transit/keys/k",
        "vault://10.0.0.5:8200/transit/keys/k",
    ],
)
async def test_a_bad_vault_url_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError, match="STRONGROOM_KMS_URL") as raised:
        await VaultTransitKeyManager.connect(url, "t0ken", timeout=1, ca_file=None)

    assert "secret" not in str(raised.value)


@pytest.mark.parametrize("token", ["", "two words", "line\nbreak", "naïve"])
async def test_a_missing_or_malformed_vault_token_is_a_configuration_error(token: str) -> None:
    with pytest.raises(ConfigurationError, match="STRONGROOM_VAULT_TOKEN") as raised:
        await VaultTransitKeyManager.connect(
            "vault://127.0.0.1:8200/transit/keys/k", token, timeout=1, ca_file=None
        )

    assert not token or token not in str(raised.value)


async def test_a_ca_file_needs_a_tls_vault_url(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="STRONGROOM_VAULT_CA_FILE"):
        await VaultTransitKeyManager.connect(
            "vault://127.0.0.1:8200/transit/keys/k", "t", timeout=1, ca_file=tmp_path / "ca.pem"
        )
    with pytest.raises(ConfigurationError, match="STRONGROOM_VAULT_CA_FILE"):
        await VaultTransitKeyManager.connect(
            "vault+https://127.0.0.1:8200/transit/keys/k",
            "t",
            timeout=1,
            ca_file=tmp_path / "missing.pem",
        )


@pytest.mark.parametrize(
    ("status", "connecting", "refused", "expected"),
    [
        (400, False, DataUnreadable, DataUnreadable),
        (400, False, Conflict, Conflict),
        (400, False, KeyManagerUnavailable, KeyManagerUnavailable),
        (403, False, DataUnreadable, KeyManagerUnavailable),
        (403, True, KeyManagerUnavailable, ConfigurationError),
        (404, True, KeyManagerUnavailable, ConfigurationError),
        (404, False, DataUnreadable, KeyManagerUnavailable),
        (429, False, KeyManagerUnavailable, KeyManagerUnavailable),
        (500, False, DataUnreadable, KeyManagerUnavailable),
        (503, True, KeyManagerUnavailable, KeyManagerUnavailable),
        (307, False, KeyManagerUnavailable, KeyManagerUnavailable),
    ],
)
def test_vault_answers_map_to_strongroom_errors(
    status: int,
    connecting: bool,
    refused: type[StrongroomError],
    expected: type[StrongroomError],
) -> None:
    error = _translate(status, "", operation="act", connecting=connecting, refused=refused)

    assert type(error) is expected
    if status == 403:
        assert "permission denied" in str(error)


# -- Vault Transit: against OpenBao --------------------------------------------------------


async def test_connect_creates_a_missing_key_and_reuses_an_existing_one(
    openbao: OpenBaoServer, connect_vault: ConnectVault
) -> None:
    name = new_key_name()
    with openbao.admin() as admin:
        assert admin.get(f"transit/keys/{name}").status_code == 404

    first = await connect_vault(name)
    await first.rotate()
    second = await connect_vault(name)

    with openbao.admin() as admin:
        key = admin.get(f"transit/keys/{name}").json()["data"]
    assert key["type"] == "aes256-gcm96"
    assert (await second.status()).versions == (1, 2)


async def test_connect_never_enables_a_secrets_engine(
    openbao: OpenBaoServer, connect_vault: ConnectVault
) -> None:
    with openbao.admin() as admin:
        mounts_before = set(admin.get("sys/mounts").json()["data"])

    with pytest.raises(ConfigurationError, match="no Transit engine"):
        await connect_vault(url=openbao.kms_url(new_key_name(), mount="nowhere"))

    with openbao.admin() as admin:
        assert set(admin.get("sys/mounts").json()["data"]) == mounts_before


async def test_connect_with_a_wrong_token_is_a_configuration_error(
    openbao: OpenBaoServer, connect_vault: ConnectVault
) -> None:
    wrong = "s.wrong-" + new_key_name()

    with pytest.raises(ConfigurationError, match="permission denied") as raised:
        await connect_vault(token=wrong)

    assert wrong not in str(raised.value)
    assert openbao.token not in str(raised.value)


async def test_a_token_denied_an_operation_later_is_unavailable_not_misconfigured(
    openbao: OpenBaoServer, connect_vault: ConnectVault
) -> None:
    name = new_key_name()
    owner = await connect_vault(name)
    _, wrapped = await owner.generate_data_key()
    reader = openbao.create_token(f'path "transit/keys/{name}" {{ capabilities = ["read"] }}')
    limited = await connect_vault(name, token=reader)

    assert (await limited.status()).latest_version == 1
    for operation in (limited.generate_data_key, lambda: limited.unwrap(wrapped.ciphertext)):
        with pytest.raises(KeyManagerUnavailable, match="permission denied") as raised:
            await operation()
        assert reader not in str(raised.value)

    with pytest.raises(ConfigurationError, match="permission denied"):
        await connect_vault(new_key_name(), token=reader)


async def test_an_unreachable_vault_is_unavailable(connect_vault: ConnectVault) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    with pytest.raises(KeyManagerUnavailable, match="cannot be reached"):
        await connect_vault(url=f"vault://127.0.0.1:{port}/transit/keys/k", timeout=1)


async def test_a_vault_that_never_answers_is_unavailable(connect_vault: ConnectVault) -> None:
    # A listening socket nobody accepts from: the kernel completes the handshake,
    # then the request waits for an answer that never comes.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        url = f"vault://127.0.0.1:{sock.getsockname()[1]}/transit/keys/k"

        with pytest.raises(KeyManagerUnavailable, match="did not answer in time"):
            await connect_vault(url=url, timeout=0.2)


async def test_a_stopped_vault_is_unavailable(
    start_openbao: Callable[..., OpenBaoServer], connect_vault: ConnectVault
) -> None:
    server = start_openbao()
    manager = await connect_vault(server=server)
    _, wrapped = await manager.generate_data_key()

    server.stop(timeout=0)

    operations: list[Callable[[], Awaitable[object]]] = [
        manager.generate_data_key,
        lambda: manager.unwrap(wrapped.ciphertext),
        lambda: manager.rewrap(wrapped.ciphertext),
        manager.rotate,
        manager.status,
        lambda: manager.set_min_decryption_version(1),
    ]
    for operation in operations:
        with pytest.raises(KeyManagerUnavailable) as raised:
            await operation()
        assert server.token not in str(raised.value)


async def test_a_sealed_vault_is_unavailable(
    start_openbao: Callable[..., OpenBaoServer], connect_vault: ConnectVault
) -> None:
    server = start_openbao()
    manager = await connect_vault(server=server)
    _, wrapped = await manager.generate_data_key()

    server.seal()

    with pytest.raises(KeyManagerUnavailable, match="503"):
        await manager.unwrap(wrapped.ciphertext)
    with pytest.raises(KeyManagerUnavailable, match="503"):
        await manager.generate_data_key()


async def test_vault_over_tls_verifies_the_server_certificate(
    start_openbao: Callable[..., OpenBaoServer], connect_vault: ConnectVault
) -> None:
    server = start_openbao(tls=True)
    name = new_key_name()

    with pytest.raises(ConfigurationError, match="not trusted"):
        await VaultTransitKeyManager.connect(
            server.kms_url(name), server.token, timeout=5, ca_file=None
        )
    manager = await connect_vault(name, server=server)
    material, wrapped = await manager.generate_data_key()

    assert server.kms_url(name).startswith("vault+https://")
    assert await manager.unwrap(wrapped.ciphertext) == material
