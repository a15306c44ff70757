"""The Vault key manager: data keys wrapped by a HashiCorp Vault or OpenBao Transit key.

The KEK lives in the Transit engine and never leaves it; this process only sees
data keys and their wrappings (``vault:v<N>:<base64>``). ``STRONGROOM_KMS_URL``
names the key as ``vault+https://HOST:PORT/MOUNT/keys/NAME`` (TLS) or, for a
server on a loopback address, ``vault://HOST:PORT/MOUNT/keys/NAME``.

Rules this module keeps:

1. It reads, creates and uses one Transit key; it never enables a secrets engine
   or changes anything on the server but that key's versions and its minimum
   decryption version.
2. The token travels only in the ``X-Vault-Token`` header of requests to the
   configured server; it is never logged and never part of an exception message,
   nor is a data key.
3. Plain HTTP is refused for anything but a loopback host, so a token never
   crosses a network in the clear.
4. Every failure is translated in ``_translate``: unreachable, slow, 5xx and
   (after startup) 403 answers are ``KeyManagerUnavailable``; a wrapping Vault
   refuses is ``DataUnreadable``; a bad URL or token, or 403 at startup, is
   ``ConfigurationError``.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import httpx

from strongroom.adapters.kms.vault_token import TokenKeeper, TokenLog
from strongroom.crypto.envelope import DATA_KEY_BYTES
from strongroom.errors import (
    ConfigurationError,
    Conflict,
    DataUnreadable,
    KeyManagerUnavailable,
    StrongroomError,
)
from strongroom.ports import KekStatus, KeyManager, WrappedKey

KEY_TYPE: Final = "aes256-gcm96"
DEFAULT_PORT: Final = 8200
URL_VARIABLE: Final = "STRONGROOM_KMS_URL"
TOKEN_VARIABLE: Final = "STRONGROOM_VAULT_TOKEN"  # noqa: S105 - a setting's name, not its value
CA_FILE_VARIABLE: Final = "STRONGROOM_VAULT_CA_FILE"
_SCHEMES: Final = {"vault": "http", "vault+https": "https"}
_SEGMENT: Final = re.compile(r"\A[A-Za-z0-9_.-]+\Z")
_KEY_NAME: Final = re.compile(r"\A[A-Za-z0-9_-]+\Z")
_WRAPPED: Final = re.compile(r"\Avault:v([1-9][0-9]{0,8}):[A-Za-z0-9+/=]+\Z")
#: How much of Vault's own error text goes into an operator-facing message.
_REASON_CHARS: Final = 200
_UNREADABLE: Final = "A data key cannot be unwrapped."


@dataclass(frozen=True, slots=True)
class VaultKeyAddress:
    """Where a Transit key lives, parsed from a ``vault://`` or ``vault+https://`` URL."""

    base_url: str
    mount: str
    key_name: str

    @property
    def tls(self) -> bool:
        return self.base_url.startswith("https:")


def parse_vault_url(url: str) -> VaultKeyAddress:
    """Parse ``vault[+https]://HOST[:PORT]/MOUNT/keys/NAME`` (port 8200 by default).

    Raises:
        ConfigurationError: the URL is malformed, carries credentials, or asks for
            plain HTTP to a host that is not a loopback address.
    """
    usage = f"{URL_VARIABLE} must look like vault+https://HOST:PORT/MOUNT/keys/NAME"
    try:
        parts = urlsplit(url)
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise ConfigurationError(f"{usage}; its port is not a number.") from None
    scheme = _SCHEMES.get(parts.scheme)
    host = parts.hostname
    if scheme is None or not host:
        raise ConfigurationError(f"{usage}.")
    if parts.username is not None or parts.password is not None:
        raise ConfigurationError(
            f"{URL_VARIABLE} must not carry credentials; put the token in {TOKEN_VARIABLE}."
        )
    if parts.query or parts.fragment:
        raise ConfigurationError(f"{usage}, with no query or fragment.")
    mount, separator, key_name = parts.path.strip("/").rpartition("/keys/")
    segments = mount.split("/")
    if not separator or not all(_SEGMENT.match(s) for s in segments) or ".." in segments:
        raise ConfigurationError(f"{usage}; MOUNT is the Transit engine's path.")
    if not _KEY_NAME.match(key_name):
        raise ConfigurationError(
            f"{usage}; the key NAME may hold letters, digits, '-' and '_' only."
        )
    if scheme == "http" and not _is_loopback(host):
        raise ConfigurationError(
            f"{URL_VARIABLE}: vault:// sends the token unencrypted and is allowed for a "
            "loopback host only; use vault+https:// for any other host."
        )
    netloc = f"[{host}]" if ":" in host else host
    return VaultKeyAddress(f"{scheme}://{netloc}:{port}", mount, key_name)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """Verify against ``ca_file`` when given, else against the system's trusted CAs."""
    try:
        return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (OSError, ssl.SSLError):
        raise ConfigurationError(
            f"{CA_FILE_VARIABLE}: {ca_file} cannot be read as PEM CA certificates."
        ) from None


def _check_token(token: str) -> None:
    if not token:
        raise ConfigurationError(f"{TOKEN_VARIABLE} is required with a vault KMS URL.")
    # A header value must be visible ASCII; saying so never repeats the token.
    if not token.isascii() or not token.isprintable() or any(c.isspace() for c in token):
        raise ConfigurationError(f"{TOKEN_VARIABLE} must be printable ASCII without spaces.")


def _reason(response: httpx.Response) -> str:
    """Vault's first error message, shortened; its errors name paths, never secrets."""
    try:
        errors = response.json().get("errors")
    except (ValueError, AttributeError):
        return ""
    if isinstance(errors, list) and errors and isinstance(errors[0], str):
        return ": " + errors[0][:_REASON_CHARS]
    return ""


def _translate(
    status: int,
    reason: str,
    *,
    operation: str,
    connecting: bool,
    refused: type[StrongroomError],
) -> StrongroomError:
    """The Strongroom error for a Vault answer that is not a success.

    ``refused`` is what a 400 (Vault's answer to a request it will not carry
    out) becomes; ``connecting`` turns a 403 into a configuration error, since at
    startup a refused token is a setting to fix, not an outage to wait out.
    """
    if status == 403:
        if connecting:
            return ConfigurationError(
                f"{TOKEN_VARIABLE}: Vault answered permission denied to {operation}; "
                "the token is unknown, expired, or its policy lacks this path."
            )
        return KeyManagerUnavailable(f"Vault answered permission denied to {operation}.")
    if status == 400 and refused is DataUnreadable:
        return DataUnreadable(_UNREADABLE)
    if status == 400:
        return refused(f"Vault refused to {operation}{reason}.")
    if status == 404 and connecting:
        return ConfigurationError(
            f"{URL_VARIABLE}: Vault has no Transit engine at that mount path{reason}."
        )
    return KeyManagerUnavailable(f"Vault answered {status} to {operation}{reason}.")


class VaultTransitKeyManager(KeyManager):
    """``KeyManager`` on a Transit key, over one keep-alive HTTP client.

    Build it with ``connect``, which checks the token and creates the key if missing.
    """

    def __init__(
        self, client: httpx.AsyncClient, address: VaultKeyAddress, keeper: TokenKeeper
    ) -> None:
        self._client = client
        self._address = address
        self._key_path = f"{address.mount}/keys/{address.key_name}"
        self._keeper = keeper

    @classmethod
    async def connect(
        cls,
        url: str,
        token: str,
        *,
        timeout: float,  # noqa: ASYNC109 - each request's limit, kept for the client's life
        ca_file: Path | None,
        log: TokenLog | None = None,
    ) -> VaultTransitKeyManager:
        """Reach the server, read the key, and create it (``aes256-gcm96``) if it is missing;
        then keep the token renewed (``vault_token``), reporting to ``log``.

        Raises:
            ConfigurationError: the URL, token or CA file is wrong, or the token
                is denied the key.
            KeyManagerUnavailable: the server cannot be reached or fails.
        """
        address = parse_vault_url(url)
        _check_token(token)
        if ca_file is not None and not address.tls:
            raise ConfigurationError(
                f"{CA_FILE_VARIABLE} applies to vault+https:// URLs only; "
                f"{URL_VARIABLE} uses plain vault://."
            )
        client = httpx.AsyncClient(
            base_url=address.base_url + "/v1/",
            headers={"X-Vault-Token": token},
            timeout=timeout,
            verify=_tls_context(ca_file) if address.tls else True,
            # The token goes to the configured server only: no proxy or netrc from the
            # environment, and no redirect to another host.
            trust_env=False,
            follow_redirects=False,
        )
        manager = cls(client, address, TokenKeeper(client, log=log))
        try:
            await manager._ensure_key()
            await manager._keeper.start()
        except BaseException:
            await manager.aclose()
            raise
        return manager

    async def _ensure_key(self) -> None:
        if await self._call("GET", self._key_path, "read the key", connecting=True, missing=True):
            return
        await self._call(
            "POST", self._key_path, "create the key", {"type": KEY_TYPE}, connecting=True
        )

    async def _call(
        self,
        method: str,
        path: str,
        operation: str,
        payload: dict[str, Any] | None = None,
        *,
        refused: type[StrongroomError] = KeyManagerUnavailable,
        connecting: bool = False,
        missing: bool = False,
    ) -> dict[str, Any]:
        """Vault's ``data`` for a request; ``{}`` for 204, and for 404 when ``missing``."""
        try:
            response = await self._client.request(method, path, json=payload)
        except httpx.TimeoutException:
            raise KeyManagerUnavailable(
                f"Vault at {self._address.base_url} did not answer in time to {operation}."
            ) from None
        except httpx.RequestError as exc:
            if connecting and _certificate_refused(exc):
                raise ConfigurationError(
                    f"{URL_VARIABLE}: the certificate of {self._address.base_url} is not "
                    f"trusted; name its CA in {CA_FILE_VARIABLE}."
                ) from None
            raise KeyManagerUnavailable(
                f"Vault at {self._address.base_url} cannot be reached to {operation}."
            ) from None
        if response.status_code == 204 or (missing and response.status_code == 404):
            return {}
        if not response.is_success:
            raise _translate(
                response.status_code,
                _reason(response),
                operation=operation,
                connecting=connecting,
                refused=refused,
            ) from None
        try:
            data = response.json()["data"]
        except (ValueError, KeyError, TypeError):
            data = None
        if not isinstance(data, dict):
            raise KeyManagerUnavailable(f"Vault gave an unexpected answer to {operation}.")
        return data

    def _path(self, action: str) -> str:
        return f"{self._address.mount}/{action}/{self._address.key_name}"

    async def generate_data_key(self) -> tuple[bytes, WrappedKey]:
        operation = "generate a data key"
        data = await self._call(
            "POST", self._path("datakey/plaintext"), operation, {"bits": DATA_KEY_BYTES * 8}
        )
        material = _decode_key(data.get("plaintext"))
        wrapped = _wrapping(data.get("ciphertext"))
        if material is None or wrapped is None:
            raise KeyManagerUnavailable(f"Vault gave an unexpected answer to {operation}.")
        return material, wrapped

    async def unwrap(self, wrapped: str) -> bytes:
        if not _WRAPPED.match(wrapped):
            raise DataUnreadable(_UNREADABLE)
        data = await self._call(
            "POST",
            self._path("decrypt"),
            "unwrap a data key",
            {"ciphertext": wrapped},
            refused=DataUnreadable,
        )
        material = _decode_key(data.get("plaintext"))
        if material is None:
            raise DataUnreadable(_UNREADABLE)
        return material

    async def rewrap(self, wrapped: str) -> WrappedKey:
        if not _WRAPPED.match(wrapped):
            raise DataUnreadable(_UNREADABLE)
        operation = "rewrap a data key"
        data = await self._call(
            "POST", self._path("rewrap"), operation, {"ciphertext": wrapped}, refused=DataUnreadable
        )
        rewrapped = _wrapping(data.get("ciphertext"))
        if rewrapped is None:
            raise KeyManagerUnavailable(f"Vault gave an unexpected answer to {operation}.")
        return rewrapped

    async def rotate(self) -> int:
        await self._call("POST", self._key_path + "/rotate", "rotate the key")
        return (await self.status()).latest_version

    async def status(self) -> KekStatus:
        operation = "read the key"
        data = await self._call("GET", self._key_path, operation)
        try:
            latest = int(data["latest_version"])
            minimum = int(data["min_decryption_version"])
            versions = tuple(sorted(int(version) for version in data["keys"]))
        except (KeyError, TypeError, ValueError):
            raise KeyManagerUnavailable(
                f"Vault gave an unexpected answer to {operation}."
            ) from None
        return KekStatus(
            backend="vault",
            latest_version=latest,
            min_decryption_version=minimum,
            versions=versions,
        )

    async def set_min_decryption_version(self, version: int) -> None:
        latest = (await self.status()).latest_version
        if not 1 <= version <= latest:
            raise Conflict(f"The minimum decryption version must be between 1 and {latest}.")
        await self._call(
            "POST",
            self._key_path + "/config",
            "set the minimum decryption version",
            {"min_decryption_version": version},
            refused=Conflict,
        )

    def credential_expires_in(self) -> float | None:
        return self._keeper.expires_in()

    async def aclose(self) -> None:
        await self._keeper.aclose()
        await self._client.aclose()


def _decode_key(plaintext: object) -> bytes | None:
    """A base64 data key of the right length, or None."""
    if not isinstance(plaintext, str):
        return None
    try:
        material = base64.b64decode(plaintext, validate=True)
    except (binascii.Error, ValueError):
        return None
    return material if len(material) == DATA_KEY_BYTES else None


def _wrapping(ciphertext: object) -> WrappedKey | None:
    """A Transit ciphertext with the key version it names, or None."""
    if not isinstance(ciphertext, str):
        return None
    match = _WRAPPED.match(ciphertext)
    return WrappedKey(ciphertext, int(match.group(1))) if match else None


def _certificate_refused(exc: BaseException) -> bool:
    """Whether a connection failed because the server's certificate did not verify."""
    cause: BaseException | None = exc
    seen: set[int] = set()
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False
