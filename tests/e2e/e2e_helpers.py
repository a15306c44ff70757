"""Helpers for the end-to-end tests: real gateway processes, the CLI, and log checks.

``Gateway`` is ``support.GatewayProcess`` with three differences the e2e tests
need: the parent closes its copies of the output files (the base class leaves
them to the garbage collector, which pytest turns into an unraisable
ResourceWarning), environment variables can be removed, and the command can be
another installation's ``strongroom`` script.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any, Final

import httpx

from strongroom.domain.cards import contains_pan
from support import AUTH, GatewayProcess, event

TOPIC: Final = "payments.tokenized"
#: Rate limits high enough that load tests measure the log, not the limiter.
UNTHROTTLED: Final = {
    "STRONGROOM_RATELIMIT_RPS": "1000000",
    "STRONGROOM_RATELIMIT_BURST": "1000000",
    "STRONGROOM_IP_RATELIMIT_RPS": "1000000",
    "STRONGROOM_IP_RATELIMIT_BURST": "1000000",
}


#: Nine digits with at most single separators between them: a third of the way to a PAN.
_LONG_DIGIT_RUN: Final = re.compile(r"[0-9](?:[ -]?[0-9]){8}")


def card_free_event(**overrides: Any) -> dict[str, Any]:
    """``support.event()`` whose random identifiers hold nothing card-shaped.

    ``event()`` draws hex hashes at random; about one in 700 holds a 13+ digit run
    that passes Luhn, which the gateway rightly refuses as ``pan_detected``. Values
    with even nine digits in a row are redrawn too, so that no identifier glued to
    its neighbours in a database page can look like a card number to a raw scan.
    """
    for _ in range(1_000):
        candidate = event()
        strings = [v for v in candidate.values() if isinstance(v, str)]
        if not any(contains_pan(v) or _LONG_DIGIT_RUN.search(v) for v in strings):
            candidate.update(overrides)
            return candidate
    raise AssertionError("could not draw a card-free event")


class Gateway(GatewayProcess):
    """A ``strongroom serve`` child process on a free loopback port."""

    def __init__(
        self,
        data_dir: Path,
        env: dict[str, str] | None = None,
        *,
        unset: Iterable[str] = (),
        command: Sequence[str] | None = None,
    ) -> None:
        super().__init__(data_dir, env)
        for name in unset:
            self.env.pop(name, None)
        self.command = list(command or [sys.executable, "-m", "strongroom"])

    def start(self, timeout: float = 30.0) -> Gateway:
        argv = [*self.command, "serve", "--port", str(self.port), "--data-dir", str(self.data_dir)]
        with self.stdout_path.open("ab") as out, self.stderr_path.open("ab") as err:
            self.process = subprocess.Popen(argv, stdout=out, stderr=err, env=self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited early:\n{self.output()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            time.sleep(0.05)
        self.process.kill()
        self.process.wait(10)
        raise RuntimeError(f"gateway did not become healthy:\n{self.output()}")

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def ensure_stopped(self) -> None:
        """Stop the process if it still runs (SIGTERM, then SIGKILL); never raises."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.stop(timeout=15)


def clean_env(extra: dict[str, str] | None = None, *, unset: Iterable[str] = ()) -> dict[str, str]:
    """The test process's environment without any ``STRONGROOM_*`` variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    env.update(extra or {})
    for name in unset:
        env.pop(name, None)
    return env


def strongroom_command() -> list[str]:
    """The installed ``strongroom`` script beside this interpreter, else ``python -m``."""
    script = shutil.which("strongroom", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "strongroom"]


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``strongroom ARGS`` with a clean environment (plus ``env``) and capture output."""
    return subprocess.run(
        [*strongroom_command(), *args],
        capture_output=True,
        text=True,
        env=clean_env(env),
        timeout=timeout,
        check=False,
    )


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
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def event_ids(records: Sequence[dict[str, Any]]) -> list[str]:
    return [record["record"]["event_id"] for record in records]


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
