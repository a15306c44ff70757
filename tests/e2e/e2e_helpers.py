"""Helpers for the end-to-end tests: card-free events, the installed CLI, and log checks.

The gateway processes are ``support.GatewayProcess``; the root ``start_gateway``
fixture starts them and stops them at teardown.
"""

from __future__ import annotations

import functools
import queue
import shutil
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, Final

import httpx

import support
import support_cli
from support import AUTH, event_ids
from support_cli import json_lines

TOPIC: Final = "payments.tokenized"


#: ``support.card_free_event`` with no nine-digit runs either: the raw scans of the data
#: directory must not meet anything card-shaped that a test did not plant.
card_free_event = functools.partial(support.card_free_event, no_long_digit_runs=True)


def strongroom_command() -> list[str]:
    """The installed ``strongroom`` script beside this interpreter, else ``python -m``."""
    script = shutil.which("strongroom", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "strongroom"]


#: ``support_cli.cli`` running the installed ``strongroom`` script.
cli = functools.partial(support_cli.cli, command=strongroom_command())


def read_topic_http(
    client: httpx.Client, topic: str = TOPIC, *, page: int = 1000, headers: Any = None
) -> list[dict[str, Any]]:
    """Every record of ``topic``, paging with ``after``/``limit`` until the end."""
    records: list[dict[str, Any]] = []
    after = -1
    for _ in range(10_000):
        response = client.get(
            f"/v1/streams/{topic}",
            params={"after": after, "limit": page},
            headers=headers or AUTH,
        )
        assert response.status_code == 200, response.text
        body = response.json()
        records.extend(body["data"])
        if not body["data"] or body["next"] is None:
            return records
        assert body["next"] == body["data"][-1]["offset"]
        after = body["next"]
    raise AssertionError("the topic did not end within 10,000 pages")


def read_topic_cli(data_dir: Path, topic: str = TOPIC, start: int = 0) -> list[dict[str, Any]]:
    """Every record of ``topic`` from ``start``, read by ``strongroom stream tail --json``."""
    result = cli(
        "stream", "tail", "--topic", topic, "--from", str(start), "--json",
        "--data-dir", str(data_dir),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json_lines(result.stdout)


def assert_well_formed_log(records: Sequence[dict[str, Any]]) -> None:
    """Offsets are dense from 0 and increasing; no event id appears twice."""
    offsets = [record["offset"] for record in records]
    assert offsets == list(range(len(records))), "offsets are not dense and increasing"
    doubled = [i for i, n in Counter(event_ids(records)).items() if n > 1]
    assert not doubled, f"{len(doubled)} event ids are stored more than once: {doubled[:5]}"


class LineReader:
    """Reads a pipe's lines on a thread so a test can wait for them with a timeout."""

    def __init__(self, stream: IO[str]) -> None:
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put(None)

    def take(self, count: int, timeout: float) -> list[str]:
        """Up to ``count`` lines, waiting at most ``timeout`` seconds in all."""
        deadline = time.monotonic() + timeout
        lines: list[str] = []
        while len(lines) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                break
            lines.append(line)
        return lines

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
