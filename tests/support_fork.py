"""``strongroom`` child processes forked from an interpreter that has imported it already.

Starting ``python -m strongroom`` imports FastAPI, pydantic, SQLAlchemy and the
rest before it does anything: seconds per process on a small machine, paid by
every gateway and CLI call a test makes. ``multiprocessing``'s fork server
imports the package once (``set_forkserver_preload``); each process forked from
it is still a separate process with its own pid, environment, working
directory, standard streams, signals and exit code, running the same
``strongroom`` command line. Only the import happened earlier.

``ForkedProcess`` answers the part of ``subprocess.Popen`` the tests use (``pid``,
``poll``, ``wait``, ``send_signal``, ``terminate``, ``kill``, ``returncode``).
Tests that must run the installed script itself pass ``command=`` and get a real
``exec``; ``STRONGROOM_TEST_EXEC=1`` makes every child a real ``exec``.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from multiprocessing.context import ForkServerContext
from pathlib import Path
from typing import Final

#: Set to 1 to start every child with a real ``exec`` of ``python -m strongroom``.
EXEC_SWITCH: Final = "STRONGROOM_TEST_EXEC"
#: What ``python -m strongroom`` calls itself in usage lines, as a real exec would.
_PROG_NAME: Final = "python -m strongroom"

_context: ForkServerContext | None = None


def forking() -> bool:
    """Whether children are forked (the default) rather than exec'd."""
    return os.environ.get(EXEC_SWITCH, "") not in {"1", "true", "yes"}


def _forkserver() -> ForkServerContext:
    global _context
    if _context is None:
        context = multiprocessing.get_context("forkserver")
        assert isinstance(context, ForkServerContext)
        # pytest's own script is the parent's __main__, which each child imports
        # again unless it is loaded already.
        context.set_forkserver_preload(["strongroom.cli", "support_fork", "pytest"])
        _context = context
    return _context


def _run(
    args: Sequence[str], env: dict[str, str], cwd: str, stdout: str, stderr: str
) -> None:  # pragma: no cover - runs in the child
    for fd, path in ((1, stdout), (2, stderr)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(target, fd)
        os.close(target)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    # The fork server ignores SIGINT for itself; the command gets the defaults.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from strongroom.cli import app

    sys.argv = [_PROG_NAME, *args]
    app(args=list(args), prog_name=_PROG_NAME)


class ForkedProcess:
    """``strongroom ARGS`` forked from the fork server, its output appended to files."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        env: dict[str, str],
        stdout: Path,
        stderr: Path,
    ) -> None:
        self.args = list(args)
        self._process = _forkserver().Process(
            target=_run,
            args=(self.args, env, str(Path.cwd()), str(stdout), str(stderr)),
            daemon=True,
        )
        self._process.start()
        pid = self._process.pid
        assert pid is not None
        self.pid: int = pid

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        code = self._process.exitcode
        if code is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return code

    def send_signal(self, signum: int) -> None:
        if self._process.exitcode is None:
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def run_forked(
    args: Sequence[str], *, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """``subprocess.run`` for ``strongroom ARGS`` with output captured as text, forked.

    Raises:
        subprocess.TimeoutExpired: the command ran past ``timeout``; it was killed.
    """
    paths = []
    for stream in ("out", "err"):
        fd, name = tempfile.mkstemp(prefix=f"strongroom-{stream}-")
        os.close(fd)
        paths.append(Path(name))
    stdout, stderr = paths
    child = ForkedProcess(args, env=env, stdout=stdout, stderr=stderr)
    try:
        code = child.wait(timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait(10)
        raise
    finally:
        out, err = stdout.read_text(errors="replace"), stderr.read_text(errors="replace")
        for path in (stdout, stderr):
            path.unlink()
    return subprocess.CompletedProcess(["strongroom", *args], code, out, err)
