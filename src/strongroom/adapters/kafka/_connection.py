"""How the gateway reaches a Kafka cluster: brokers, TLS and the client certificate.

``STRONGROOM_STREAM_URL`` is ``kafka://HOST:PORT[,HOST:PORT]`` (plaintext) or
``kafkas://...`` (TLS). With TLS:

1. The brokers' certificates are verified, host name included, against
   ``STRONGROOM_KAFKA_CA_FILE`` when it is set, else against the system's CAs.
2. ``STRONGROOM_KAFKA_CERT_FILE`` and ``STRONGROOM_KAFKA_KEY_FILE`` together
   present a client certificate (mutual TLS), for clusters that authenticate
   their clients that way; one without the other is refused.
3. Every file is checked when the gateway starts, with Python's own TLS
   library, so a wrong path or a key that does not match its certificate is a
   configuration error naming the variable, not a broker that never answers.
4. The TLS files apply to ``kafkas://`` only: set with ``kafka://`` they would
   suggest a protection the connection does not have, so they are refused.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from strongroom.errors import ConfigurationError

URL_VARIABLE: Final = "STRONGROOM_STREAM_URL"
CA_FILE_VARIABLE: Final = "STRONGROOM_KAFKA_CA_FILE"
CERT_FILE_VARIABLE: Final = "STRONGROOM_KAFKA_CERT_FILE"
KEY_FILE_VARIABLE: Final = "STRONGROOM_KAFKA_KEY_FILE"
_SCHEMES: Final = {"kafka": False, "kafkas": True}
_USAGE: Final = (
    f"{URL_VARIABLE}: use kafka://HOST:PORT[,HOST:PORT] (kafkas:// for TLS) to name Kafka brokers"
)


def bootstrap_servers(url: str) -> str:
    """``HOST:PORT[,HOST:PORT]`` from ``kafka[s]://HOST:PORT[,HOST:PORT]``.

    Raises:
        ConfigurationError: the URL does not name brokers as HOST:PORT.
    """
    scheme, separator, rest = url.partition("://")
    hosts = rest.rstrip("/").split(",") if separator and scheme in _SCHEMES else []
    for host in hosts:
        name, colon, port = host.rpartition(":")
        if not colon or not name or not port.isdigit() or not 0 < int(port) < 65536:
            hosts = []
            break
    if not hosts:
        raise ConfigurationError(_USAGE)
    return ",".join(hosts)


@dataclass(frozen=True, slots=True)
class KafkaConnection:
    """Where the brokers are and how to talk to them; build it with ``parse``."""

    bootstrap: str
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @classmethod
    def parse(
        cls,
        url: str,
        *,
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
    ) -> KafkaConnection:
        """The connection ``url`` and the TLS files name, checked (see the module's rules).

        Raises:
            ConfigurationError: naming the variable to fix.
        """
        bootstrap = bootstrap_servers(url)
        tls = _SCHEMES[url.partition("://")[0]]
        named = [
            variable
            for variable, path in (
                (CA_FILE_VARIABLE, ca_file),
                (CERT_FILE_VARIABLE, cert_file),
                (KEY_FILE_VARIABLE, key_file),
            )
            if path is not None
        ]
        if named and not tls:
            raise ConfigurationError(
                f"{named[0]} applies to kafkas:// (TLS) only; {URL_VARIABLE} uses plain kafka://."
            )
        if (cert_file is None) != (key_file is None):
            raise ConfigurationError(
                f"{CERT_FILE_VARIABLE} and {KEY_FILE_VARIABLE} go together: "
                "a client certificate needs its private key."
            )
        if tls:
            _check_files(ca_file, cert_file, key_file)
        return cls(bootstrap, tls, ca_file, cert_file, key_file)

    def client_config(self) -> dict[str, Any]:
        """librdkafka's settings for this connection, for every client the gateway makes."""
        config: dict[str, Any] = {"bootstrap.servers": self.bootstrap}
        if not self.tls:
            return config
        config.update(
            {
                "security.protocol": "SSL",
                # Verify the brokers' host names, not only that a trusted CA signed them.
                "ssl.endpoint.identification.algorithm": "https",
                # Without a CA file, look for the system's CA bundle: the wheel's own
                # OpenSSL does not know where this system keeps it.
                "ssl.ca.location": str(self.ca_file) if self.ca_file else "probe",
            }
        )
        if self.cert_file is not None and self.key_file is not None:
            config["ssl.certificate.location"] = str(self.cert_file)
            config["ssl.key.location"] = str(self.key_file)
        return config


def _check_files(ca_file: Path | None, cert_file: Path | None, key_file: Path | None) -> None:
    context = ssl.create_default_context()
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError):
            raise ConfigurationError(
                f"{CA_FILE_VARIABLE}: {ca_file} cannot be read as PEM CA certificates."
            ) from None
    if cert_file is not None and key_file is not None:
        try:
            context.load_cert_chain(str(cert_file), str(key_file))
        except (OSError, ssl.SSLError):
            raise ConfigurationError(
                f"{CERT_FILE_VARIABLE} and {KEY_FILE_VARIABLE}: {cert_file} and {key_file} "
                "cannot be read as a PEM certificate and its matching, unencrypted private key."
            ) from None


#: What librdkafka says when TLS fails, and what the operator should change.
_TLS_FAILURES: Final[Mapping[str, str]] = {
    "certificate verify failed": (
        f"the Kafka brokers' certificate is not trusted; name its CA in {CA_FILE_VARIABLE}, "
        "and check that it was issued for the host name in the URL"
    ),
    # TLS 1.3 refuses a missing or untrusted client certificate after the handshake:
    # with an alert, or by just closing the connection.
    "alert certificate required": (
        "the Kafka brokers ask for a client certificate; set "
        f"{CERT_FILE_VARIABLE} and {KEY_FILE_VARIABLE}"
    ),
    "alert unknown ca": (
        f"the Kafka brokers do not trust the client certificate in {CERT_FILE_VARIABLE}"
    ),
    "ssl connection closed by peer": (
        "the Kafka brokers closed the TLS connection at once; if they ask for a client "
        f"certificate, set {CERT_FILE_VARIABLE} and {KEY_FILE_VARIABLE} to one their CA trusts"
    ),
    "ssl handshake failed": (
        "the TLS handshake with the Kafka brokers failed; check that the listener "
        "speaks TLS and, if it asks for a client certificate, set "
        f"{CERT_FILE_VARIABLE} and {KEY_FILE_VARIABLE}"
    ),
}


def explain_tls_failure(error: str) -> ConfigurationError | None:
    """The configuration error behind a client error text, when it is a TLS failure."""
    lowered = error.lower()
    for sign, advice in _TLS_FAILURES.items():
        if sign in lowered:
            return ConfigurationError(f"{URL_VARIABLE}: {advice}.")
    return None
