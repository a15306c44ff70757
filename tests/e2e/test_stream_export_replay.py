"""``strongroom stream export``, ``replay`` and ``trim`` against a live gateway's data dir.

1. Export resumes where it stopped, to a file (the file is its checkpoint, even
   after kill -9 mid-write) or to stdout with a checkpoint file: no gap, no repeat.
2. Replay rewinds a consumer group to an offset or a time, and is audited.
3. Trim deletes only what every consumer group has settled.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_helpers import TOPIC, card_free_event, cli, read_topic_cli, strongroom_command

from support import JSON_HEADERS, UNTHROTTLED_ENV, GatewayProcess
from support_cli import clean_env, data_dir_env

pytestmark = pytest.mark.slow

GROUP = "ledger"


def _ingest(client: httpx.Client, count: int) -> list[str]:
    events = [card_free_event() for _ in range(count)]
    for start in range(0, count, 100):
        response = client.post(
            "/v1/events", json={"events": events[start : start + 100]}, headers=JSON_HEADERS
        )
        assert response.status_code == 202, response.text
    return [event["event_id"] for event in events]


def _export(data_dir: Path, *options: str) -> subprocess.CompletedProcess[str]:
    result = cli("stream", "export", "--topic", TOPIC, *options, "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    return result


def _exported(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_export_to_a_file_resumes_after_its_last_line(
    start_gateway: Callable[..., GatewayProcess], tmp_path: Path
) -> None:
    gateway = start_gateway(env=UNTHROTTLED_ENV)
    target = tmp_path / "export" / "tokenized.jsonl"
    target.parent.mkdir()
    with gateway.client() as client:
        first = _ingest(client, 12)
    _export(gateway.data_dir, "--to", str(target))
    _export(gateway.data_dir, "--to", str(target))
    assert [line["record"]["event_id"] for line in _exported(target)] == first

    with gateway.client() as client:
        more = _ingest(client, 5)
    # A crash mid-line leaves half a record: it is written again in full.
    with target.open("a") as file:
        file.write('{"topic":"payments.tokenized","offset":12,"rec')
    _export(gateway.data_dir, "--to", str(target))

    lines = _exported(target)
    assert [line["offset"] for line in lines] == list(range(17))
    assert [line["record"]["event_id"] for line in lines] == first + more


def test_export_to_stdout_resumes_from_its_checkpoint(
    start_gateway: Callable[..., GatewayProcess], tmp_path: Path
) -> None:
    gateway = start_gateway(env=UNTHROTTLED_ENV)
    checkpoint = tmp_path / "tokenized.offset"
    with gateway.client() as client:
        first = _ingest(client, 6)
    printed = _export(gateway.data_dir, "--checkpoint", str(checkpoint)).stdout.splitlines()
    assert [json.loads(line)["record"]["event_id"] for line in printed] == first
    assert checkpoint.read_text().strip() == "5"
    assert _export(gateway.data_dir, "--checkpoint", str(checkpoint)).stdout == ""

    with gateway.client() as client:
        more = _ingest(client, 3)
    printed = _export(gateway.data_dir, "--checkpoint", str(checkpoint)).stdout.splitlines()
    assert [json.loads(line)["record"]["event_id"] for line in printed] == more


def test_a_following_export_killed_under_load_resumes_without_gaps_or_repeats(
    start_gateway: Callable[..., GatewayProcess], tmp_path: Path
) -> None:
    gateway = start_gateway(env=UNTHROTTLED_ENV)
    target = tmp_path / "tokenized.jsonl"
    args = (
        "stream", "export", "--topic", TOPIC, "--to", str(target), "--follow",
        "--data-dir", str(gateway.data_dir),
    )  # fmt: skip
    exporter = subprocess.Popen(
        [*strongroom_command(), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=clean_env(data_dir_env(args)),
    )
    ids: list[str] = []
    try:
        with gateway.client() as client:
            deadline = time.monotonic() + 30
            for _ in range(40):
                ids += _ingest(client, 50)
                if (target.exists() and target.stat().st_size > 0) or time.monotonic() > deadline:
                    break
            ids += _ingest(client, 100)
        os.kill(exporter.pid, signal.SIGKILL)
    finally:
        if exporter.poll() is None:
            exporter.kill()
        exporter.wait(10)

    _export(gateway.data_dir, "--to", str(target))

    lines = _exported(target)
    assert [line["offset"] for line in lines] == list(range(len(ids)))
    assert [line["record"]["event_id"] for line in lines] == ids


def _group_read(client: httpx.Client, limit: int = 100) -> list[int]:
    response = client.post(
        f"/v1/streams/{TOPIC}/groups/{GROUP}/read",
        json={"consumer": "c1", "limit": limit},
        headers=JSON_HEADERS,
    )
    assert response.status_code == 200, response.text
    return [delivery["offset"] for delivery in response.json()["data"]]


def _ack(client: httpx.Client, offsets: list[int]) -> None:
    response = client.post(
        f"/v1/streams/{TOPIC}/groups/{GROUP}/ack", json={"offsets": offsets}, headers=JSON_HEADERS
    )
    assert response.status_code == 200, response.text


def _audited(data_dir: Path, action: str) -> list[dict[str, Any]]:
    result = cli("audit", "export", "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return [record for record in records if record.get("action") == action]


def test_replay_rewinds_a_group_to_an_offset_or_a_time(
    start_gateway: Callable[..., GatewayProcess],
) -> None:
    gateway = start_gateway(env=UNTHROTTLED_ENV)
    with gateway.client() as client:
        _ingest(client, 5)
        time.sleep(1.1)
        between = datetime.now(UTC).isoformat()
        time.sleep(0.1)
        _ingest(client, 5)
        assert _group_read(client) == list(range(10))
        _ack(client, list(range(10)))
        assert _group_read(client) == []

    by_offset = cli(
        "stream", "replay", "--topic", TOPIC, "--from", "7", "--to-group", GROUP,
        "--data-dir", str(gateway.data_dir),
    )  # fmt: skip
    assert by_offset.returncode == 0, by_offset.stderr
    assert "from offset 7" in by_offset.stdout
    with gateway.client() as client:
        assert _group_read(client) == [7, 8, 9]
        _ack(client, [7, 8, 9])

    by_time = cli(
        "stream", "replay", "--topic", TOPIC, "--from", between, "--to-group", GROUP,
        "--data-dir", str(gateway.data_dir),
    )  # fmt: skip
    assert by_time.returncode == 0, by_time.stderr
    with gateway.client() as client:
        assert _group_read(client) == [5, 6, 7, 8, 9]

    (first, second) = _audited(gateway.data_dir, "stream.group_rewound")
    assert first["details"] == {"from": "7", "offset": 7}
    assert second["details"]["offset"] == 5


@pytest.mark.parametrize("bad", ["yesterday", "2026-11-22T10:00:00"])
def test_replay_refuses_a_start_that_is_neither_offset_nor_zoned_time(
    gateway: GatewayProcess, bad: str
) -> None:
    result = cli(
        "stream", "replay", "--from", bad, "--to-group", GROUP,
        "--data-dir", str(gateway.data_dir),
    )  # fmt: skip
    assert result.returncode == 2
    assert "--from" in result.stderr


def test_trim_keeps_what_a_group_has_not_settled(
    start_gateway: Callable[..., GatewayProcess],
) -> None:
    gateway = start_gateway(env=UNTHROTTLED_ENV)
    with gateway.client() as client:
        ids = _ingest(client, 10)
        assert _group_read(client, limit=6) == list(range(6))
        _ack(client, [0, 1, 2, 3])

    result = cli(
        "stream", "trim", "--topic", TOPIC, "--keep", "2", "--data-dir", str(gateway.data_dir)
    )

    assert result.returncode == 0, result.stderr
    assert "trimmed 4 record(s)" in result.stdout
    left = read_topic_cli(gateway.data_dir)
    assert [line["record"]["event_id"] for line in left] == ids[4:]
    (audited,) = _audited(gateway.data_dir, "stream.trimmed")
    assert audited["details"] == {"keep": 2, "trimmed": 4}
