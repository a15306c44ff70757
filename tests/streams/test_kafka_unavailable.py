"""A broker that cannot be reached fails the log with ``StorageUnavailable`` (503 upstream)
and leaves nothing in the index: the client's retry is neither a duplicate nor lost."""

from __future__ import annotations

import asyncio
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
from sqlalchemy import select

from strongroom.adapters.kafka._broker import Timings
from strongroom.adapters.kafka._connection import KafkaConnection
from strongroom.adapters.kafka.log import KafkaEventLog
from strongroom.adapters.sql.kafka_tables import kafka_records
from strongroom.adapters.store import open_store
from strongroom.errors import StorageUnavailable
from strongroom.ports import NewRecord
from support import free_port
from support_app import make_settings
from support_streams import kafka_broker, unique_prefix

TOPIC = "payments.tokenized"
#: Short broker timeouts, so a test waits seconds rather than the production defaults.
QUICK = Timings(delivery=1.0, request=1.0)


def record(record_id: str) -> NewRecord:
    return NewRecord("t1", record_id, "merchant-1", b"body")


async def test_opening_the_log_on_a_closed_port_is_storage_unavailable(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        database_url=f"sqlite:///{tmp_path / 'store.db'}",
        stream_url=f"kafka://127.0.0.1:{free_port()}",
        stream_prefix=unique_prefix(),
    )
    started = time.monotonic()
    with pytest.raises(StorageUnavailable):
        await asyncio.wait_for(open_store(settings), 30)
    assert time.monotonic() - started < 20


async def test_appends_while_the_broker_is_down_fail_and_index_nothing(tmp_path: Path) -> None:
    store = await open_store(
        make_settings(tmp_path, database_url=f"sqlite:///{tmp_path / 'store.db'}")
    )
    with ExitStack() as broker:
        url = broker.enter_context(kafka_broker(tmp_path / "tansu.log"))
        log = await KafkaEventLog.open(
            KafkaConnection.parse(url),
            store.engine,
            prefix=unique_prefix(),
            max_queued_weight=1000,
            timings=QUICK,
        )
        try:
            assert (await log.append(TOPIC, [record("before")])).accepted == ("before",)
            broker.close()  # the broker process stops

            started = time.monotonic()
            with pytest.raises(StorageUnavailable):
                await asyncio.wait_for(log.append(TOPIC, [record("lost")]), 30)
            with pytest.raises(StorageUnavailable):
                await asyncio.wait_for(
                    log.append_together(
                        [(TOPIC, [record("one")]), ("payments.raw", [record("two")])]
                    ),
                    30,
                )
            assert time.monotonic() - started < 25
            with pytest.raises(StorageUnavailable):
                await asyncio.wait_for(log.check_writable(), 30)
            with pytest.raises(StorageUnavailable):
                await asyncio.wait_for(log.read(TOPIC, tenant="t1", after=None, limit=10), 30)
        finally:
            await log.aclose()
    try:
        async with store.engine.connect() as connection:
            indexed = (await connection.execute(select(kafka_records.c.record_id))).scalars()
            # Only the acknowledged record: no claim was left behind to make a retry
            # look like a duplicate.
            assert sorted(indexed) == ["before"]
    finally:
        await store.aclose()
