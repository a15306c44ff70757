"""Shared test helpers: events, keys, and a real gateway process on loopback."""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import httpx

from strongroom.domain.cards import contains_pan
from support_cli import clean_env, cli_argv
from support_database import database_contents, database_env
from support_fork import ForkedProcess, forking

KEY = "test-key-0123456789abcdef"
OTHER_KEY = "test-key-fedcba9876543210"
AUTH = {"Authorization": f"Bearer {KEY}"}
JSON_HEADERS = {**AUTH, "Content-Type": "application/json"}
TOKENIZED_URL: Final = "/v1/streams/payments.tokenized"
#: A managed key's secret, wherever it appears in a text.
KEY_IN_TEXT: Final = re.compile(r"sr_(?:live|test)_[0-9A-Za-z]{38}")
#: Rate limits (for ``serve``) high enough that a test measures anything but the limiter.
UNTHROTTLED_ENV: Final = {
    "STRONGROOM_RATELIMIT_RPS": "1000000",
    "STRONGROOM_RATELIMIT_BURST": "1000000",
    "STRONGROOM_IP_RATELIMIT_RPS": "1000000",
    "STRONGROOM_IP_RATELIMIT_BURST": "1000000",
}


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def key_id_of(secret: str) -> str:
    """The public id a managed key carries: ``key_`` + its first 12 random characters."""
    return "key_" + secret[8:20]


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


#: Nine digits with at most single separators between them: a third of the way to a PAN.
_LONG_DIGIT_RUN: Final = re.compile(r"[0-9](?:[ -]?[0-9]){8}")


def smallest_event(**fields: Any) -> dict[str, Any]:
    """An event of only the required fields, always the same, plus ``fields``."""
    return {
        "event_id": "0f8fad5b-d9cb-469f-a165-70867728950e",
        "event_type": "payment.failed",
        "event_timestamp": "2026-11-22T10:00:00Z",
        "processor": "stripe",
        **fields,
    }


def card_free_event(*, no_long_digit_runs: bool = False, **overrides: Any) -> dict[str, Any]:
    """``event()`` redrawn until no random identifier looks like a card number, then
    ``overrides`` applied (so they may hold card data on purpose).

    ``event()`` draws identifiers at random; about one in 300 holds a 13+ digit run,
    joined by dashes, that passes Luhn, which the gateway rightly refuses as
    ``pan_detected``. With ``no_long_digit_runs`` values with even nine digits in a row
    are redrawn too, so that no identifier glued to its neighbours in a database page
    can look like a card number to a raw scan.
    """
    for _ in range(1_000):
        body = event()
        strings = [v for v in body.values() if isinstance(v, str)]
        if not any(
            contains_pan(v) or (no_long_digit_runs and _LONG_DIGIT_RUN.search(v)) for v in strings
        ):
            body.update(overrides)
            return body
    raise AssertionError("could not draw a card-free event")


def event_ids(records: Iterable[dict[str, Any]]) -> list[str]:
    """The event ids of stream records, in their order."""
    return [record["record"]["event_id"] for record in records]


def stored_contents(data_dir: Path) -> dict[str, bytes]:
    """Everything the gateway keeps for ``data_dir``: each file in it, by its relative
    path, and on PostgreSQL each table of its database (``database:TABLE``)."""
    files = {
        str(path.relative_to(data_dir)): path.read_bytes()
        for path in sorted(data_dir.rglob("*"))
        if path.is_file()
    }
    return {**files, **database_contents(data_dir)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class GatewayProcess:
    """``strongroom serve`` as a child process, with its output captured to files.

    The environment is this process's without ``STRONGROOM_*`` variables, with
    ``STRONGROOM_API_KEYS=KEY`` and the data dir's database (see ``support_database``),
    plus ``env``, minus ``unset``; ``command`` replaces ``python -m strongroom``
    (another installation's ``strongroom`` script, say).
    """

    def __init__(
        self,
        data_dir: Path,
        env: dict[str, str] | None = None,
        *,
        unset: Iterable[str] = (),
        command: Sequence[str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.stdout_path = data_dir.parent / f"gateway-{self.port}.out"
        self.stderr_path = data_dir.parent / f"gateway-{self.port}.err"
        env = env or {}
        # A test that names a database of its own gets that one alone.
        database = {} if "STRONGROOM_DATABASE_URL" in env else database_env(data_dir)
        self.env = clean_env({"STRONGROOM_API_KEYS": KEY, **database, **env}, unset=unset)
        self.command = list(command) if command else None
        self.process: subprocess.Popen[bytes] | ForkedProcess | None = None

    def start(self, timeout: float = 30.0) -> GatewayProcess:
        """Start and wait until ``/health`` answers 200; killed if it never does."""
        args = ["serve", "--port", str(self.port), "--data-dir", str(self.data_dir)]
        if self.command is None and forking():
            self.process = ForkedProcess(
                args, env=self.env, stdout=self.stdout_path, stderr=self.stderr_path
            )
        else:
            # The parent closes its copies of the output files: an unclosed file is a
            # ResourceWarning, which the suite turns into an error.
            with self.stdout_path.open("ab") as out, self.stderr_path.open("ab") as err:
                self.process = subprocess.Popen(
                    cli_argv(*args, command=self.command), stdout=out, stderr=err, env=self.env
                )
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

    def output(self) -> str:
        parts = []
        for path in (self.stdout_path, self.stderr_path):
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

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

    def ensure_stopped(self, timeout: float = 15.0) -> None:
        """Stop the process if it still runs (SIGTERM, then SIGKILL); never raises."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.stop(timeout=timeout)

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10, **kwargs)


@contextlib.contextmanager
def gateway_starter(
    default_dir: Path, *, start_timeout: float = 30.0, stop_timeout: float = 15.0
) -> Iterator[Callable[..., GatewayProcess]]:
    """``start(data_dir=None, env=None, **kw)`` starts a ``GatewayProcess`` (in
    ``default_dir`` unless told); every one started is stopped on leaving."""
    started: list[GatewayProcess] = []

    def start(
        data_dir: Path | None = None, env: dict[str, str] | None = None, **kw: Any
    ) -> GatewayProcess:
        process = GatewayProcess(data_dir or default_dir, env, **kw)
        started.append(process)
        return process.start(start_timeout)

    try:
        yield start
    finally:
        for process in started:
            process.ensure_stopped(stop_timeout)
