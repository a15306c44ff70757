"""``strongroom stream``: tail (with --follow) and dead letters, against a live data dir."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_helpers import TOPIC, LineReader, card_free_event, cli, read_topic_cli, strongroom_command

from support import JSON_HEADERS, UNTHROTTLED_ENV, GatewayProcess
from support_cli import clean_env, data_dir_env

pytestmark = pytest.mark.slow

GROUP = "billing-1"


def _ingest(client: httpx.Client, count: int) -> list[str]:
    """Ingest ``count`` events (singles and a batch) and return their ids in order."""
    ids: list[str] = []
    singles = [card_free_event() for _ in range(min(count, 3))]
    for single in singles:
        response = client.post("/v1/events", json=single, headers=JSON_HEADERS)
        assert response.status_code == 202, response.text
        ids.append(single["event_id"])
    rest = [card_free_event() for _ in range(count - len(singles))]
    if rest:
        response = client.post("/v1/events", json={"events": rest}, headers=JSON_HEADERS)
        assert response.status_code == 202, response.text
        ids.extend(e["event_id"] for e in rest)
    return ids


@pytest.fixture(scope="module")
def fed_gateway(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[GatewayProcess, list[str]]]:
    """A gateway holding 25 events, shared by the tests that only read it."""
    gateway = GatewayProcess(tmp_path_factory.mktemp("tail") / "data", UNTHROTTLED_ENV)
    try:
        gateway.start()
        with gateway.client() as client:
            ids = _ingest(client, 25)
        yield gateway, ids
    finally:
        gateway.ensure_stopped()


@pytest.mark.parametrize("start", [0, 10, 25])
def test_tail_prints_json_lines_in_offset_order_from_the_given_offset(
    fed_gateway: tuple[GatewayProcess, list[str]], start: int
) -> None:
    gateway, ids = fed_gateway
    lines = read_topic_cli(gateway.data_dir, start=start)
    assert [line["offset"] for line in lines] == list(range(start, len(ids)))
    assert [line["record"]["event_id"] for line in lines] == ids[start:]
    for line in lines:
        assert line["topic"] == TOPIC
        assert isinstance(line["record"], dict)
        assert line["record"]["processor"] == "stripe"


def test_tail_without_json_prints_one_tab_separated_line_per_record(
    fed_gateway: tuple[GatewayProcess, list[str]],
) -> None:
    gateway, ids = fed_gateway
    result = cli("stream", "tail", "--from", "20", "--data-dir", str(gateway.data_dir))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(ids) - 20
    for offset, line in zip(range(20, len(ids)), lines, strict=True):
        fields = line.split("\t")
        assert fields[0] == str(offset)
        assert json.loads(fields[-1])["event_id"] == ids[offset]


def test_tail_follow_picks_up_new_records(start_gateway: Callable[..., GatewayProcess]) -> None:
    gateway = start_gateway(env=UNTHROTTLED_ENV)
    with gateway.client() as client:
        _ingest(client, 25)
    args = (
        "stream", "tail", "--topic", TOPIC, "--from", "20",
        "--json", "--follow", "--data-dir", str(gateway.data_dir),
    )  # fmt: skip
    follower = subprocess.Popen(
        [*strongroom_command(), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(data_dir_env(args)),
    )
    assert follower.stdout is not None
    assert follower.stderr is not None
    reader = LineReader(follower.stdout)
    try:
        existing = [json.loads(line) for line in reader.take(5, timeout=20)]
        assert [line["offset"] for line in existing] == [20, 21, 22, 23, 24]
        assert follower.poll() is None, "--follow exited instead of waiting"

        with gateway.client() as client:
            more = _ingest(client, 7)
        fresh = [json.loads(line) for line in reader.take(7, timeout=15)]
        assert [line["offset"] for line in fresh] == list(range(25, 32))
        assert [line["record"]["event_id"] for line in fresh] == more
        assert reader.take(1, timeout=1.2) == [], "a record was printed twice"
        follower.send_signal(signal.SIGINT)
        code = follower.wait(10)
        assert code == 0, follower.stderr.read()
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait(10)
        reader.join(10)
        follower.stdout.close()
        follower.stderr.close()


def _group_read(client: httpx.Client, **body: Any) -> list[dict[str, Any]]:
    response = client.post(
        f"/v1/streams/{TOPIC}/groups/{GROUP}/read", json=body, headers=JSON_HEADERS
    )
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def _dlq_list(data_dir: Path, *extra: str) -> list[dict[str, Any]]:
    result = cli("stream", "dlq", "list", "--data-dir", str(data_dir), *extra)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_dead_letters_are_listed_and_replayed_from_the_cli(
    start_gateway: Callable[..., GatewayProcess],
) -> None:
    gateway = start_gateway(env={**UNTHROTTLED_ENV, "STRONGROOM_CONSUMER_MAX_DELIVERIES": "2"})
    with gateway.client() as client:
        ids = _ingest(client, 3)
        first = _group_read(client, consumer="c1", limit=10, visibility_timeout_seconds=0.05)
        assert [(d["offset"], d["deliveries"]) for d in first] == [(0, 1), (1, 1), (2, 1)]
        time.sleep(0.2)
        second = _group_read(client, consumer="c1", limit=10, visibility_timeout_seconds=0.05)
        assert [(d["offset"], d["deliveries"]) for d in second] == [(0, 2), (1, 2), (2, 2)]
        time.sleep(0.2)
        # Never acknowledged and out of deliveries: all three go to the dead-letter topic.
        assert _group_read(client, consumer="c1", limit=10, visibility_timeout_seconds=0.05) == []
        over_http = client.get(f"/v1/streams/{TOPIC}/dead-letters", headers=JSON_HEADERS).json()

    letters = _dlq_list(gateway.data_dir)
    assert [(d["offset"], d["group"], d["deliveries"]) for d in letters] == [
        (0, GROUP, 2), (1, GROUP, 2), (2, GROUP, 2),
    ]  # fmt: skip
    assert all(d["topic"] == TOPIC and d["replayed"] is False for d in letters)
    assert [d["dead_letter_offset"] for d in letters] == [
        d["dead_letter_offset"] for d in over_http["data"]
    ]
    assert _dlq_list(gateway.data_dir, "--group", "some-other-group") == []

    replay = cli("stream", "dlq", "replay", "--group", GROUP, "--data-dir", str(gateway.data_dir))
    assert replay.returncode == 0, replay.stderr
    assert "replayed 3 dead letter(s)" in replay.stdout
    assert all(d["replayed"] is True for d in _dlq_list(gateway.data_dir))
    again = cli("stream", "dlq", "replay", "--group", GROUP, "--data-dir", str(gateway.data_dir))
    assert again.returncode == 0, again.stderr
    assert "replayed 0 dead letter(s)" in again.stdout

    # The running gateway redelivers what the CLI replayed; acking settles it.
    with gateway.client() as client:
        redelivered = _group_read(client, consumer="c2", limit=10)
        assert [d["offset"] for d in redelivered] == [0, 1, 2]
        assert [d["record"]["event_id"] for d in redelivered] == ids
        ack = client.post(
            f"/v1/streams/{TOPIC}/groups/{GROUP}/ack",
            json={"offsets": [0, 1, 2]},
            headers=JSON_HEADERS,
        )
        assert ack.status_code == 200, ack.text
        assert ack.json() == {"acknowledged": 3}
        assert _group_read(client, consumer="c2", limit=10) == []

    dlq_topic = read_topic_cli(gateway.data_dir, topic=f"{TOPIC}.dlq")
    assert [line["record"]["offset"] for line in dlq_topic] == [0, 1, 2]


@pytest.mark.parametrize(
    "arguments",
    [
        pytest.param(["stream", "tail", "--follow"], id="tail-follow"),
        pytest.param(["stream", "dlq", "list"], id="dlq-list"),
        pytest.param(["stream", "dlq", "replay", "--group", GROUP], id="dlq-replay"),
    ],
)
def test_missing_data_dir_is_an_error(arguments: list[str], tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir"
    result = cli(*arguments, "--data-dir", str(missing), timeout=30)
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert str(missing) in lines[0]
    assert result.stdout == ""
    assert not missing.exists(), "a read-only command created the data dir"
