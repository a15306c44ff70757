"""The local key manager: a versioned keyring file in the data dir.

The keyring file (``kek.keyring``, mode 0600) holds every KEK version. With
``STRONGROOM_MASTER_KEY`` set it is sealed under that key, so a copy of the
data dir alone opens nothing; a plain keyring found with a master key set is
sealed on first load. The CLI and the server share the file: writes take an
exclusive lock and replace the file atomically, and readers reload it when it
changes, so ``strongroom kms rotate`` takes effect in a running gateway.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from strongroom.crypto.envelope import DATA_KEY_BYTES, Unreadable, new_data_key_material
from strongroom.crypto.keyed_hash import create_private_file
from strongroom.crypto.keyring import Keyring, wrapped_version
from strongroom.errors import ConfigurationError, Conflict, DataUnreadable
from strongroom.ports import KekStatus, KeyManager, WrappedKey

KEYRING_FILE: Final = "kek.keyring"


class LocalKeyManager(KeyManager):
    """``KeyManager`` on a keyring file; all work is in process, nothing blocks for long."""

    def __init__(self, data_dir: Path, master_key: bytes | None) -> None:
        self._path = data_dir / KEYRING_FILE
        self._lock_path = data_dir / (KEYRING_FILE + ".lock")
        self._master_key = master_key
        self._keyring: Keyring | None = None
        self._loaded_stamp: tuple[int, int] | None = None
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self._exclusive():
            if not self._path.exists():
                self._write(Keyring.create())
            elif master_key is not None and not Keyring.is_sealed(self._path.read_bytes()):
                self._write(self._read(None))
            self._current()

    def _read(self, master_key: bytes | None) -> Keyring:
        try:
            return Keyring.deserialize(self._path.read_bytes(), master_key)
        except ValueError as exc:
            raise ConfigurationError(f"{self._path}: {exc}") from None

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        create_private_file(self._lock_path, b"")
        with self._lock_path.open("rb") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _write(self, keyring: Keyring) -> None:
        temporary = self._path.with_suffix(".tmp")
        temporary.unlink(missing_ok=True)
        create_private_file(temporary, keyring.serialize(self._master_key))
        os.replace(temporary, self._path)
        directory = os.open(self._path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        self._keyring = keyring
        self._loaded_stamp = self._stamp()

    def _stamp(self) -> tuple[int, int]:
        stat = self._path.stat()
        return stat.st_mtime_ns, stat.st_ino

    def _current(self) -> Keyring:
        """The keyring, re-read when another process replaced the file."""
        stamp = self._stamp()
        if self._keyring is None or stamp != self._loaded_stamp:
            self._keyring = self._read(self._master_key)
            self._loaded_stamp = stamp
        return self._keyring

    async def generate_data_key(self) -> tuple[bytes, WrappedKey]:
        keyring = self._current()
        material = new_data_key_material()
        return material, WrappedKey(keyring.wrap(material), keyring.latest)

    async def unwrap(self, wrapped: str) -> bytes:
        try:
            material = self._current().unwrap(wrapped)
        except Unreadable:
            raise DataUnreadable("A data key cannot be unwrapped.") from None
        if len(material) != DATA_KEY_BYTES:
            raise DataUnreadable("A data key cannot be unwrapped.")
        return material

    async def rewrap(self, wrapped: str) -> WrappedKey:
        material = await self.unwrap(wrapped)
        keyring = self._current()
        if wrapped_version(wrapped) == keyring.latest:
            return WrappedKey(wrapped, keyring.latest)
        return WrappedKey(keyring.wrap(material), keyring.latest)

    async def rotate(self) -> int:
        return await asyncio.to_thread(self._rotate)

    def _rotate(self) -> int:
        with self._exclusive():
            keyring = self._read(self._master_key)
            version = keyring.rotate()
            self._write(keyring)
        return version

    def reseal(self, new_master_key: bytes | None) -> None:
        """Re-seal the keyring under a new master key (None: store it plain, 0600)."""
        with self._exclusive():
            keyring = self._read(self._master_key)
            self._master_key = new_master_key
            self._write(keyring)

    async def status(self) -> KekStatus:
        keyring = self._current()
        return KekStatus(
            backend="local",
            latest_version=keyring.latest,
            min_decryption_version=keyring.min_decryption_version,
            versions=tuple(sorted(keyring.versions)),
        )

    async def set_min_decryption_version(self, version: int) -> None:
        await asyncio.to_thread(self._set_min, version)

    def _set_min(self, version: int) -> None:
        with self._exclusive():
            keyring = self._read(self._master_key)
            if not 1 <= version <= keyring.latest:
                raise Conflict(
                    f"The minimum decryption version must be between 1 and {keyring.latest}."
                )
            keyring.min_decryption_version = version
            self._write(keyring)
