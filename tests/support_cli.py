"""Running ``strongroom`` as a child process: a clean environment, the command, its output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from typing import Any


def clean_env(extra: dict[str, str] | None = None, *, unset: Iterable[str] = ()) -> dict[str, str]:
    """This process's environment without any ``STRONGROOM_*`` variable, plus ``extra``,
    minus ``unset``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    env.update(extra or {})
    for name in unset:
        env.pop(name, None)
    return env


def cli_argv(*args: str, command: Sequence[str] | None = None) -> list[str]:
    """``command ARGS``; the command is ``python -m strongroom`` unless given."""
    return [*(command or (sys.executable, "-m", "strongroom")), *args]


def cli(
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    command: Sequence[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``strongroom ARGS`` (see ``cli_argv``) with a clean environment, output captured."""
    return subprocess.run(
        cli_argv(*args, command=command),
        capture_output=True,
        text=True,
        env=clean_env(env),
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
