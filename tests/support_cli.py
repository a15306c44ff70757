"""Running ``strongroom`` as a child process: a clean environment, the command, its output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final

from support_database import database_env
from support_fork import forking, run_forked

#: Commands that make an install where there is none. Any other command pointed at a
#: missing data dir must answer "no Strongroom data", so it is not given a database.
_CREATING: Final = (("init",), ("serve",), ("tenants", "create"), ("db",))


def clean_env(extra: dict[str, str] | None = None, *, unset: Iterable[str] = ()) -> dict[str, str]:
    """This process's environment without any ``STRONGROOM_*`` variable, plus ``extra``,
    minus ``unset``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    env.update(extra or {})
    for name in unset:
        env.pop(name, None)
    return env


def data_dir_env(args: Sequence[str], env: dict[str, str] | None = None) -> dict[str, str]:
    """The database of the data dir that ``args`` name with ``--data-dir`` (see
    ``support_database``; nothing on SQLite), for a command on an install: one that
    exists, or one the command makes (``_CREATING``). Nothing if ``args`` or the
    command's own ``env`` name a database."""
    if "STRONGROOM_DATABASE_URL" in (env or {}) or any(
        arg == "--database-url" or arg.startswith("--database-url=") for arg in args
    ):
        return {}
    data_dir: Path | None = None
    for index, arg in enumerate(args):
        if arg == "--data-dir" and index + 1 < len(args):
            data_dir = Path(args[index + 1])
        elif arg.startswith("--data-dir="):
            data_dir = Path(arg.partition("=")[2])
    if data_dir is None:
        return {}
    creating = any(tuple(args[: len(words)]) == words for words in _CREATING)
    return database_env(data_dir) if creating or data_dir.exists() else {}


def cli_argv(*args: str, command: Sequence[str] | None = None) -> list[str]:
    """``command ARGS``; the command is ``python -m strongroom`` unless given."""
    return [*(command or (sys.executable, "-m", "strongroom")), *args]


def cli(
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    command: Sequence[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``strongroom ARGS`` (see ``cli_argv``) with a clean environment (plus the data dir's
    database, see ``data_dir_env``, and ``env``), output captured; forked from the
    fork server unless ``command`` is given (``support_fork``)."""
    child_env = clean_env({**data_dir_env(args, env), **(env or {})})
    if command is None and forking():
        return run_forked(args, env=child_env, timeout=timeout)
    return subprocess.run(
        cli_argv(*args, command=command),
        capture_output=True,
        text=True,
        env=child_env,
        timeout=timeout,
        check=False,
    )


def cli_ok(*args: str, env: dict[str, str] | None = None) -> str:
    """Run the CLI, require exit 0, and return its stdout."""
    result = cli(*args, env=env)
    assert result.returncode == 0, f"{args}: exit {result.returncode}\n{result.stderr}"
    return result.stdout


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every non-blank line of ``text``, parsed as JSON."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]
