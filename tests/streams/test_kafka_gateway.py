"""A gateway with ``STRONGROOM_STREAM_URL=kafka://…`` publishes ingested events to Kafka,
consumer groups read them over HTTP, and ``strongroom stream tail`` reads them back."""

from __future__ import annotations

import asyncio
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from support import JSON_HEADERS, TOKENIZED_URL, card_free_event
from support_app import make_settings, serving
from support_cli import cli, json_lines
from support_streams import kafka_url, unique_prefix

TOPIC = "payments.tokenized"

__all__ = ["kafka_url"]  # the session's broker, a fixture


def broker_offsets(bootstrap: str, topic: str) -> list[int]:
    """The offsets the broker holds in ``topic`` (read with a plain consumer)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "test-inspector", "enable.partition.eof": True}
    )
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        offsets: list[int] = []
        for _ in range(200):
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error() is not None:
                break
            offsets.append(message.offset() or 0)
        return offsets
    finally:
        consumer.close()


async def test_events_ingested_over_http_are_tailed_from_kafka(
    tmp_path: Path, kafka_url: str
) -> None:
    prefix = unique_prefix()
    settings = make_settings(tmp_path, stream_url=kafka_url, stream_prefix=prefix)
    events = [card_free_event() for _ in range(5)]
    async with serving(settings) as (_, http):
        single = await http.post("/v1/events", json=events[0], headers=JSON_HEADERS)
        batch = await http.post("/v1/events", json={"events": events[1:]}, headers=JSON_HEADERS)
        retry = await http.post("/v1/events", json=events[0], headers=JSON_HEADERS)
        assert (single.status_code, batch.status_code, retry.status_code) == (202, 202, 202)
        assert retry.json()["duplicates"] == [events[0]["event_id"]]

        read = await http.post(
            f"{TOKENIZED_URL}/groups/billing/read", json={"limit": 10}, headers=JSON_HEADERS
        )
        assert read.status_code == 200, read.text
        delivered = read.json()["data"]
        assert [item["offset"] for item in delivered] == list(range(len(events)))
        acked = await http.post(
            f"{TOKENIZED_URL}/groups/billing/ack",
            json={"offsets": [item["offset"] for item in delivered]},
            headers=JSON_HEADERS,
        )
        assert acked.status_code == 200, acked.text

    env = {"STRONGROOM_STREAM_URL": kafka_url, "STRONGROOM_STREAM_PREFIX": prefix}
    tail = ("stream", "tail", "--topic", TOPIC, "--from", "0", "--json")
    data_dir = ("--data-dir", str(settings.data_dir))
    from_kafka = await asyncio.to_thread(cli, *tail, *data_dir, env=env)
    assert from_kafka.returncode == 0, from_kafka.stderr
    lines = json_lines(from_kafka.stdout)
    assert [line["offset"] for line in lines] == list(range(len(events)))
    assert [line["record"]["event_id"] for line in lines] == [e["event_id"] for e in events]
    assert {line["topic"] for line in lines} == {TOPIC}

    # The records are the broker's: the database's own log holds none of them.
    from_database = await asyncio.to_thread(cli, *tail, *data_dir)
    assert from_database.returncode == 0, from_database.stderr
    assert json_lines(from_database.stdout) == []
    held = await asyncio.to_thread(
        broker_offsets, kafka_url.removeprefix("kafka://"), prefix + TOPIC
    )
    assert held == list(range(len(events)))
