"""A gateway with ``STRONGROOM_STREAM_URL=redis://…`` publishes ingested events to
Redis Streams, and ``strongroom stream tail`` reads them back from there."""

from __future__ import annotations

import asyncio
from pathlib import Path

from redis.asyncio import Redis

from support import JSON_HEADERS, card_free_event
from support_app import make_settings, serving
from support_cli import cli, json_lines
from support_streams import REDIS_URL, redis_stream_settings

TOPIC = "payments.tokenized"


async def test_events_ingested_over_http_are_tailed_from_redis(tmp_path: Path) -> None:
    async with redis_stream_settings() as stream:
        settings = make_settings(tmp_path, **stream)
        events = [card_free_event() for _ in range(5)]
        async with serving(settings) as (_, http):
            single = await http.post("/v1/events", json=events[0], headers=JSON_HEADERS)
            batch = await http.post("/v1/events", json={"events": events[1:]}, headers=JSON_HEADERS)
            retry = await http.post("/v1/events", json=events[0], headers=JSON_HEADERS)
        assert (single.status_code, batch.status_code, retry.status_code) == (202, 202, 202)
        assert retry.json()["duplicates"] == [events[0]["event_id"]]

        env = {
            "STRONGROOM_STREAM_URL": stream["stream_url"],
            "STRONGROOM_STREAM_PREFIX": stream["stream_prefix"],
        }
        tail = ("stream", "tail", "--topic", TOPIC, "--from", "0", "--json")
        data_dir = ("--data-dir", str(settings.data_dir))
        from_redis = await asyncio.to_thread(cli, *tail, *data_dir, env=env)
        assert from_redis.returncode == 0, from_redis.stderr
        lines = json_lines(from_redis.stdout)
        assert [line["offset"] for line in lines] == list(range(len(events)))
        assert [line["record"]["event_id"] for line in lines] == [e["event_id"] for e in events]
        assert {line["topic"] for line in lines} == {TOPIC}

        # The records are Redis's: the database's own log holds none of them.
        from_database = await asyncio.to_thread(cli, *tail, *data_dir)
        assert from_database.returncode == 0, from_database.stderr
        assert json_lines(from_database.stdout) == []
        client = Redis.from_url(REDIS_URL, socket_timeout=5)
        try:
            prefix = stream["stream_prefix"]
            assert await client.hget(f"{prefix}topic:{TOPIC}", "next") == b"5"
        finally:
            await client.aclose()
