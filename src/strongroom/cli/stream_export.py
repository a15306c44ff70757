"""Where ``strongroom stream export`` resumes: the output file itself, or a checkpoint.

Exporting to a file, the file is its own checkpoint: the last complete line
names the last exported offset, and a line cut short by a crash is removed
before anything is appended, so a restart neither skips nor repeats a record.
Exporting to stdout, the reader on the other end of the pipe cannot be asked,
so the position goes to a checkpoint file, replaced atomically after every
page the pipe has taken; after a crash at most that page comes again, and its
lines carry their offsets for the shipper to drop.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Final

from strongroom.crypto.keyed_hash import create_private_file

#: How far back from the end of an export file the last complete line is looked for.
TAIL_BYTES: Final = 1 << 20


class ExportFile:
    """An export file opened for appending after its last complete line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.last_offset = _repair_and_find_last_offset(path)
        self.stream: IO[str] = path.open("a", encoding="utf-8")

    def commit(self) -> None:
        """Make what was written durable (called once per page)."""
        self.stream.flush()
        os.fsync(self.stream.fileno())

    def close(self) -> None:
        self.stream.close()


def _repair_and_find_last_offset(path: Path) -> int | None:
    if not path.exists():
        path.touch(mode=0o600)
        return None
    with path.open("rb+") as file:
        size = file.seek(0, os.SEEK_END)
        start = max(0, size - TAIL_BYTES)
        file.seek(start)
        tail = file.read()
        complete = tail.rfind(b"\n") + 1
        if start + complete < size:
            # A line cut short by a crash: it is written again in full.
            file.truncate(start + complete)
            file.flush()
            os.fsync(file.fileno())
        lines = tail[:complete].splitlines()
    if not lines:
        if size > 0 and start > 0:
            raise ValueError(f"{path}: no complete line in its last {TAIL_BYTES} bytes")
        return None
    try:
        return int(json.loads(lines[-1])["offset"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: its last line is not an exported record") from exc


def read_checkpoint(path: Path) -> int | None:
    """The last exported offset a checkpoint file holds (None when it does not exist)."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    try:
        return int(text)
    except ValueError as exc:
        raise ValueError(f"{path}: not a checkpoint (expected one offset)") from exc


def write_checkpoint(path: Path, offset: int) -> None:
    """Replace the checkpoint atomically: a crash leaves the old or the new one, whole."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.unlink(missing_ok=True)
    create_private_file(temporary, f"{offset}\n".encode())
    os.replace(temporary, path)
