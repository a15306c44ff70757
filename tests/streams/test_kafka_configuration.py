"""What the Kafka event log refuses to run on: a URL that names no broker, and a topic
with more than one partition (the log's offset is the partition's)."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from strongroom.adapters.kafka._connection import bootstrap_servers
from strongroom.adapters.store import open_store
from strongroom.errors import ConfigurationError
from strongroom.ports import NewRecord
from support_app import make_settings
from support_streams import kafka_url, unique_prefix

__all__ = ["kafka_url"]  # the session's broker, a fixture


@pytest.mark.parametrize(
    ("url", "servers"),
    [
        ("kafka://127.0.0.1:9092", "127.0.0.1:9092"),
        ("kafka://a.example:9092,b.example:9093/", "a.example:9092,b.example:9093"),
        ("kafka://[::1]:9092", "[::1]:9092"),
    ],
)
def test_a_url_names_the_bootstrap_brokers(url: str, servers: str) -> None:
    assert bootstrap_servers(url) == servers


@pytest.mark.parametrize(
    "url", ["kafka://", "kafka://host", "kafka://host:port", "kafka://:9092", "redis://h:1"]
)
def test_a_url_without_brokers_is_refused_naming_the_setting(url: str) -> None:
    with pytest.raises(ConfigurationError, match="STRONGROOM_STREAM_URL"):
        bootstrap_servers(url)


async def test_a_store_on_a_url_without_brokers_does_not_open(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, database_url=f"sqlite:///{tmp_path / 'store.db'}", stream_url="kafka://nowhere"
    )
    with pytest.raises(ConfigurationError, match="kafka://HOST:PORT"):
        await open_store(settings)


async def test_a_topic_with_several_partitions_is_refused(tmp_path: Path, kafka_url: str) -> None:
    prefix = unique_prefix()
    admin = AdminClient({"bootstrap.servers": kafka_url.removeprefix("kafka://")})
    created = admin.create_topics([NewTopic(prefix + "payments.tokenized", num_partitions=3)])
    for future in created.values():
        future.result(timeout=10)
    settings = make_settings(
        tmp_path,
        database_url=f"sqlite:///{tmp_path / 'store.db'}",
        stream_url=kafka_url,
        stream_prefix=prefix,
    )
    store = await open_store(settings)
    try:
        with pytest.raises(ConfigurationError, match="3 partitions"):
            await store.log.append("payments.tokenized", [NewRecord("t1", "a", "k", b"x")])
        # Other topics are unaffected.
        accepted = await store.log.append("payments.raw", [NewRecord("t1", "a", "k", b"x")])
        assert accepted.accepted == ("a",)
    finally:
        await store.aclose()
