"""Shared test helpers: events, keys, and a real gateway process on loopback."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

KEY = "test-key-0123456789abcdef"
OTHER_KEY = "test-key-fedcba9876543210"
AUTH = {"Authorization": f"Bearer {KEY}"}
JSON_HEADERS = {**AUTH, "Content-Type": "application/json"}


def event(**overrides: Any) -> dict[str, Any]:
    """A valid PayFlux payment event with a fresh event_id."""
    body: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "event_type": "payment.failed",
        "event_timestamp": "2026-11-22T10:00:00Z",
        "processor": "stripe",
        # 32 hex characters: long hex identifiers are exempt from card-number
        # screening, while a 16-character one holds a Luhn-valid 13-digit run
        # about once in a thousand draws and would make tests flaky.
        "merchant_id_hash": "m_" + uuid.uuid4().hex,
        "payment_intent_id_hash": "pi_" + uuid.uuid4().hex,
        "failure_category": "card_declined",
        "retry_count": 1,
        "geo_bucket": "eu-west",
        "amount_bucket": "10-100",
        "system_source": "checkout",
        "payment_method_bucket": "card",
        "channel": "web",
        "retry_result": "failed",
        "failure_origin": "issuer",
    }
    body.update(overrides)
    return body


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class GatewayProcess:
    """``strongroom serve`` as a child process, with its output captured to files."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.stdout_path = data_dir.parent / f"gateway-{self.port}.out"
        self.stderr_path = data_dir.parent / f"gateway-{self.port}.err"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")},
            "STRONGROOM_API_KEYS": KEY,
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> GatewayProcess:
        with self.stdout_path.open("ab") as stdout, self.stderr_path.open("ab") as stderr:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "strongroom",
                    "serve",
                    "--port",
                    str(self.port),
                    "--data-dir",
                    str(self.data_dir),
                ],
                stdout=stdout,
                stderr=stderr,
                env=self.env,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited early:\n{self.output()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"gateway did not become healthy:\n{self.output()}")

    def output(self) -> str:
        parts = []
        for path in (self.stdout_path, self.stderr_path):
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
            raise

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10, **kwargs)
