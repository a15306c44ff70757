"""The stream on Kafka over TLS (``kafkas://``): verified brokers, mutual TLS, and
configuration errors that name the variable to fix.

The broker is the real Kafka-protocol broker behind a real TLS listener on
loopback (``support_tls.TlsProxy``), which also shows what crossed the wire.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from strongroom.adapters.kafka._connection import KafkaConnection
from strongroom.adapters.store import open_store
from strongroom.config import Settings
from strongroom.errors import ConfigurationError, StorageUnavailable
from strongroom.ports import NewRecord
from support import JSON_HEADERS, TOKENIZED_URL, card_free_event, event_ids, free_port
from support_app import make_settings, serving
from support_streams import kafka_broker, unique_prefix
from support_tls import Issued, PrivateCa, TlsProxy

TOPIC = "payments.tokenized"


@dataclass
class TlsKafka:
    """A broker reachable only through TLS on ``proxy.port``, and the certificates."""

    url: str
    ca: PrivateCa
    proxy: TlsProxy
    client: Issued


@contextlib.contextmanager
def tls_kafka(
    work_dir: Path, *, mutual: bool = False, hosts: tuple[str, ...] = ("localhost", "127.0.0.1")
) -> Iterator[TlsKafka]:
    ca = PrivateCa.create(work_dir / "ca")
    server = ca.issue(work_dir / "ca", "broker", hosts=hosts)
    client = ca.issue(work_dir / "ca", "gateway", client=True)
    broker_port = free_port()
    with TlsProxy(server, client_ca=ca.cert if mutual else None) as proxy:
        proxy.start(broker_port)
        with kafka_broker(work_dir / "tansu.log", port=broker_port, advertised_port=proxy.port):
            yield TlsKafka(f"kafkas://127.0.0.1:{proxy.port}", ca, proxy, client)


def _settings(tmp_path: Path, url: str, **tls: Path) -> Settings:
    return make_settings(
        tmp_path,
        database_url=f"sqlite:///{tmp_path / 'store.db'}",
        stream_url=url,
        stream_prefix=unique_prefix(),
        **{f"kafka_{name}": path for name, path in tls.items()},
    )


async def test_events_reach_kafka_and_come_back_over_tls(tmp_path: Path) -> None:
    with tls_kafka(tmp_path) as kafka:
        settings = _settings(tmp_path, kafka.url, ca_file=kafka.ca.cert)
        sent = [card_free_event() for _ in range(5)]
        async with serving(settings) as (_, http):
            accepted = await http.post("/v1/events", json={"events": sent}, headers=JSON_HEADERS)
            read = await http.get(TOKENIZED_URL, headers=JSON_HEADERS)

        assert accepted.status_code == 202
        assert event_ids(read.json()["data"]) == [event["event_id"] for event in sent]
        # The broker advertises the TLS port only: every byte went through a handshake.
        assert kafka.proxy.handshakes >= 1


async def test_a_broker_certificate_from_another_ca_is_refused_naming_the_ca_file(
    tmp_path: Path,
) -> None:
    stranger = PrivateCa.create(tmp_path / "stranger", "Some other CA")
    with tls_kafka(tmp_path) as kafka:
        settings = _settings(tmp_path, kafka.url, ca_file=stranger.cert)
        with pytest.raises(ConfigurationError, match="STRONGROOM_KAFKA_CA_FILE"):
            await open_store(settings)
        assert kafka.proxy.handshakes == 0


async def test_a_broker_certificate_for_another_host_is_refused(tmp_path: Path) -> None:
    with tls_kafka(tmp_path, hosts=("kafka.elsewhere.example",)) as kafka:
        settings = _settings(tmp_path, kafka.url, ca_file=kafka.ca.cert)
        with pytest.raises(ConfigurationError, match="issued for the host name"):
            await open_store(settings)
        assert kafka.proxy.handshakes == 0


async def test_without_a_ca_file_a_private_ca_is_not_trusted(tmp_path: Path) -> None:
    with tls_kafka(tmp_path) as kafka, pytest.raises(ConfigurationError, match="not trusted"):
        await open_store(_settings(tmp_path, kafka.url))


async def test_plain_kafka_to_a_tls_listener_sends_nothing_readable(tmp_path: Path) -> None:
    with tls_kafka(tmp_path) as kafka:
        settings = _settings(tmp_path, kafka.url.replace("kafkas://", "kafka://"))
        with pytest.raises(StorageUnavailable):
            await open_store(settings)
        assert kafka.proxy.handshakes == 0


async def test_mutual_tls_needs_the_client_certificate(tmp_path: Path) -> None:
    with tls_kafka(tmp_path, mutual=True) as kafka:
        without = _settings(tmp_path / "without", kafka.url, ca_file=kafka.ca.cert)
        with pytest.raises(ConfigurationError, match="STRONGROOM_KAFKA_CERT_FILE"):
            await open_store(without)

        with_cert = _settings(
            tmp_path / "with",
            kafka.url,
            ca_file=kafka.ca.cert,
            cert_file=kafka.client.cert,
            key_file=kafka.client.key,
        )
        store = await open_store(with_cert)
        try:
            result = await store.log.append(TOPIC, [NewRecord("t1", "only", "k", b"{}")])
            assert result.accepted == ("only",)
            (stored,) = await store.log.read(TOPIC, tenant="t1", after=-1, limit=10)
            assert stored.record_id == "only"
        finally:
            await store.aclose()
        assert kafka.proxy.handshakes >= 1


# -- configuration, checked before any connection --------------------------------


def test_kafkas_asks_librdkafka_for_verified_tls(tmp_path: Path) -> None:
    ca = PrivateCa.create(tmp_path)
    client = ca.issue(tmp_path, "gateway", client=True)
    config = KafkaConnection.parse(
        "kafkas://b1:9093,b2:9093", ca_file=ca.cert, cert_file=client.cert, key_file=client.key
    ).client_config()

    assert config == {
        "bootstrap.servers": "b1:9093,b2:9093",
        "security.protocol": "SSL",
        "ssl.endpoint.identification.algorithm": "https",
        "ssl.ca.location": str(ca.cert),
        "ssl.certificate.location": str(client.cert),
        "ssl.key.location": str(client.key),
    }
    system_cas = KafkaConnection.parse("kafkas://b1:9093").client_config()
    assert system_cas["ssl.ca.location"] == "probe"
    assert KafkaConnection.parse("kafka://b1:9092").client_config() == {
        "bootstrap.servers": "b1:9092"
    }


def test_tls_files_with_plain_kafka_are_refused(tmp_path: Path) -> None:
    ca = PrivateCa.create(tmp_path)
    with pytest.raises(ConfigurationError, match=r"STRONGROOM_KAFKA_CA_FILE applies to kafkas://"):
        KafkaConnection.parse("kafka://127.0.0.1:9092", ca_file=ca.cert)


def test_a_client_certificate_without_its_key_is_refused(tmp_path: Path) -> None:
    ca = PrivateCa.create(tmp_path)
    client = ca.issue(tmp_path, "gateway", client=True)
    with pytest.raises(ConfigurationError, match="go together"):
        KafkaConnection.parse("kafkas://127.0.0.1:9093", cert_file=client.cert)


def test_an_unreadable_ca_file_is_refused_naming_it(tmp_path: Path) -> None:
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate")
    for path in (not_pem, tmp_path / "missing.pem"):
        with pytest.raises(ConfigurationError, match="STRONGROOM_KAFKA_CA_FILE"):
            KafkaConnection.parse("kafkas://127.0.0.1:9093", ca_file=path)


def test_a_key_that_does_not_match_its_certificate_is_refused(tmp_path: Path) -> None:
    ca = PrivateCa.create(tmp_path)
    one = ca.issue(tmp_path, "one", client=True)
    other = ca.issue(tmp_path, "other", client=True)
    with pytest.raises(ConfigurationError, match="STRONGROOM_KAFKA_KEY_FILE"):
        KafkaConnection.parse("kafkas://127.0.0.1:9093", cert_file=one.cert, key_file=other.key)


def test_the_settings_take_a_kafkas_url(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, stream_url="kafkas://broker:9093")
    assert settings.stream_url == "kafkas://broker:9093"
