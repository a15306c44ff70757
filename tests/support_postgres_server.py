"""A private, throwaway PostgreSQL cluster for tests that stop, kill or restart the server.

The shared server (``support_database``) must never be restarted by a test; this
one belongs to the test that made it. ``PostgresServer`` runs ``initdb`` into a
fresh temporary directory and ``postgres`` on a free loopback port with
``fsync=on`` (an acknowledged commit must survive a kill), trust authentication
and the socket in its own directory. ``stop()`` is a fast shutdown, ``kill()`` is
SIGKILL to the postmaster and every backend (a crash), and ``start()`` brings the
same cluster back on the same port.

PostgreSQL refuses to run as root. When the tests run as root the cluster
belongs to an unprivileged account (``postgres`` when it exists, else
``nobody``), and its processes are started under that account by
``subprocess.Popen(user=..., group=...)``: no ``su`` or ``runuser`` in between,
so the pid we hold is the postmaster's own.

The binaries are looked up in ``STRONGROOM_TEST_PG_BIN``, then
``/usr/lib/postgresql/*/bin`` (newest first), then ``PATH``. When they are missing
the test is skipped, naming PostgreSQL, except with ``CI=true``, where it fails.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Final, NoReturn

import pytest

from support import free_port

#: Seconds for the server to accept connections after ``start()``.
START_TIMEOUT_SECONDS: Final = 30.0
#: Seconds for a fast shutdown before the server is killed instead.
STOP_TIMEOUT_SECONDS: Final = 15.0
#: Accounts tried, in order, to own the cluster when we are root.
UNPRIVILEGED_USERS: Final = ("postgres", "nobody")
SUPERUSER: Final = "postgres"


def _version_key(path: Path) -> tuple[int, ...]:
    digits = path.parent.name.split(".")
    return tuple(int(part) for part in digits if part.isdigit())


def find_binaries() -> Path | None:
    """The directory holding ``initdb``, ``postgres`` and ``pg_isready``, or None."""
    candidates: list[Path] = []
    explicit = os.environ.get("STRONGROOM_TEST_PG_BIN")
    if explicit:
        candidates.append(Path(explicit))
    candidates += sorted(
        (path.parent for path in Path("/usr/lib/postgresql").glob("*/bin/initdb")),
        key=lambda directory: _version_key(directory / "initdb"),
        reverse=True,
    )
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for directory in candidates:
        if all((directory / name).is_file() for name in ("initdb", "postgres", "pg_isready")):
            return directory
    return None


def _unavailable(reason: str) -> NoReturn:
    """Skip (or in CI fail) the current test: a private PostgreSQL cannot be run."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL is required in CI: {reason}")
    pytest.skip(f"PostgreSQL is not available: {reason}")


def _owner() -> pwd.struct_passwd | None:
    """The account to run PostgreSQL as: None means ourselves (we are not root)."""
    if os.geteuid() != 0:
        return None
    for name in UNPRIVILEGED_USERS:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    _unavailable(f"running as root and none of the accounts {UNPRIVILEGED_USERS} exists")


class PostgresServer:
    """One private cluster: ``initdb`` once, then ``start``/``stop``/``kill`` at will."""

    def __init__(self, root: Path, binaries: Path, owner: pwd.struct_passwd | None) -> None:
        self.root = root
        self.binaries = binaries
        self.owner = owner
        self.data = root / "data"
        self.socket_dir = root / "socket"
        self.log_path = root / "postgres.log"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    # -- what tests use ----------------------------------------------------------

    @property
    def url(self) -> str:
        """The superuser's URL on the ``postgres`` database (trust authentication)."""
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{name}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> PostgresServer:
        """Start on the same port and data dir; return once it accepts connections."""
        if self.running:
            raise RuntimeError("the private PostgreSQL is already running")
        argv = [
            str(self.binaries / "postgres"),
            "-D", str(self.data),
            "-p", str(self.port),
            "-k", str(self.socket_dir),
            "-c", "listen_addresses=127.0.0.1",
            "-c", "fsync=on",
            "-c", "max_connections=100",
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.process = self._popen(argv, log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"PostgreSQL exited early:\n{self.log_tail()}")
            if self._accepts_connections():
                return self
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"PostgreSQL did not accept connections:\n{self.log_tail()}")

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """Fast shutdown (SIGINT): clients are disconnected, work is checkpointed."""
        if not self.running:
            return
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the postmaster and every backend, as a crash would; no checkpoint."""
        if not self.running:
            return
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    # -- setting up --------------------------------------------------------------

    def initdb(self) -> None:
        argv = [
            str(self.binaries / "initdb"), "-D", str(self.data), "--auth=trust",
            "-U", SUPERUSER, "--no-sync", "--encoding=UTF8", "--locale=C",
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            process = self._popen(argv, log)
        if process.wait(120) != 0:
            raise RuntimeError(f"initdb failed:\n{self.log_tail()}")

    def _popen(self, argv: list[str], output: IO[bytes]) -> subprocess.Popen[bytes]:
        """Run as the cluster's owner, in a session of its own (so ``kill`` gets every
        backend), with a minimal environment."""
        identity: dict[str, Any] = {}
        if self.owner is not None:
            identity = {"user": self.owner.pw_uid, "group": self.owner.pw_gid, "extra_groups": []}
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}
        return subprocess.Popen(
            argv,
            cwd=self.root,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **identity,
        )

    def _accepts_connections(self) -> bool:
        done = subprocess.run(
            [str(self.binaries / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port),
             "-U", SUPERUSER, "-d", "postgres", "-t", "1"],
            capture_output=True,
            timeout=10,
            check=False,
        )  # fmt: skip
        return done.returncode == 0


@contextlib.contextmanager
def private_postgres() -> Iterator[PostgresServer]:
    """A running private cluster, killed and deleted on leaving."""
    binaries = find_binaries()
    if binaries is None:
        _unavailable("initdb/postgres not found (set STRONGROOM_TEST_PG_BIN)")
    owner = _owner()
    # Not under pytest's tmp_path: as root that lies below a 0700 directory the
    # cluster's owner could not enter.
    root = Path(tempfile.mkdtemp(prefix="strongroom-pg-"))
    try:
        if owner is not None:
            os.chown(root, owner.pw_uid, owner.pw_gid)
        server = PostgresServer(root, binaries, owner)
        server.socket_dir.mkdir()
        if owner is not None:
            os.chown(server.socket_dir, owner.pw_uid, owner.pw_gid)
        server.initdb()
        server.start()
        try:
            yield server
        finally:
            server.kill()
    finally:
        shutil.rmtree(root, ignore_errors=True)
