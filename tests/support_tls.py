"""Certificates and a TLS-terminating proxy, for tests of clients that speak TLS.

``TlsProxy`` accepts TLS on a loopback port (optionally asking for a client
certificate) and relays the decrypted bytes to a plain TCP server, as a TLS
listener in front of a broker would. Only a completed handshake is relayed; the
proxy counts those.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import select
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

BUFFER: Final = 64 * 1024
#: How often blocked calls wake to see whether the proxy is closing.
POLL_SECONDS: Final = 0.1


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, as PEM files."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class PrivateCa:
    """A certificate authority made for one test: its certificate file, and what it signs."""

    cert: Path
    _key: ec.EllipticCurvePrivateKey
    _name: x509.Name

    @classmethod
    def create(cls, directory: Path, name: str = "Strongroom test CA") -> PrivateCa:
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            _builder(subject, subject, key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        path = directory / f"{name.replace(' ', '-')}.pem"
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(path, key, subject)

    def issue(
        self,
        directory: Path,
        name: str,
        *,
        client: bool = False,
        hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
    ) -> Issued:
        """A leaf for ``hosts`` (server) or named ``name`` (client)."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = _builder(subject, self._name, key.public_key()).add_extension(
            x509.ExtendedKeyUsage([usage]), critical=False
        )
        if not client:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_general_name(host) for host in hosts]),
                critical=False,
            )
        cert = builder.sign(self._key, hashes.SHA256())
        issued = Issued(directory / f"{name}.pem", directory / f"{name}-key.pem")
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        issued.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return issued


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


class TlsProxy:
    """TLS on ``port`` (loopback), relayed in plain TCP to the port given to ``start``.

    One thread per connection does the handshake and then relays both ways, so
    each TLS object is only ever used from one thread; every socket is closed
    by the thread that made it.
    """

    def __init__(self, server: Issued, *, client_ca: Path | None = None) -> None:
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(server.cert, server.key)
        if client_ca is not None:
            self._context.verify_mode = ssl.CERT_REQUIRED
            self._context.load_verify_locations(cafile=str(client_ca))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(POLL_SECONDS)
        self.port: int = self._listener.getsockname()[1]
        self.target_port: int | None = None
        #: Connections relayed after a completed handshake.
        self.handshakes = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, name="tls-proxy", daemon=True)

    def start(self, target_port: int) -> None:
        self.target_port = target_port
        self._acceptor.start()

    def _accept(self) -> None:
        with self._listener:
            while not self._stop.is_set():
                try:
                    raw, _ = self._listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                thread = threading.Thread(target=self._serve, args=(raw,), daemon=True)
                with self._lock:
                    self._threads.append(thread)
                thread.start()

    def _serve(self, raw: socket.socket) -> None:
        with contextlib.ExitStack() as closing:
            closing.enter_context(raw)
            raw.settimeout(5)
            try:
                client = closing.enter_context(self._context.wrap_socket(raw, server_side=True))
            except (OSError, ssl.SSLError):
                return
            with self._lock:
                self.handshakes += 1
            assert self.target_port is not None
            try:
                upstream = closing.enter_context(
                    socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                )
            except OSError:
                return
            with contextlib.suppress(OSError, ssl.SSLError):
                self._relay(client, upstream)

    def _relay(self, client: ssl.SSLSocket, upstream: socket.socket) -> None:
        while not self._stop.is_set():
            # Bytes already decrypted inside the TLS object do not wake select().
            readable = [client] if client.pending() else []
            if not readable:
                readable, _, _ = select.select([client, upstream], [], [], POLL_SECONDS)
            for source in readable:
                sink = upstream if source is client else client
                data = source.recv(BUFFER)
                if not data:
                    return
                sink.sendall(data)

    def close(self) -> None:
        self._stop.set()
        if self._acceptor.is_alive():
            self._acceptor.join(timeout=10)
        else:
            self._listener.close()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=10)

    def __enter__(self) -> TlsProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
