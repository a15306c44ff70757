"""Structured JSON logs with a redaction processor as the last line of defence.

Code never logs bodies or credentials on purpose; the redaction processor masks
anything that still looks like a card number or a secret, in every string of
every event, before it is rendered.
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Iterable, MutableMapping
from typing import Any, BinaryIO, Final, TextIO

import orjson
import structlog

from strongroom.domain.cards import mask_pans, may_contain_pan

# Every secret shape below starts with one of these, in any case.
_SECRET_MARKERS = ("bearer", "sr_live_", "sr_test_", "whsec_")
_SECRET_SHAPES = re.compile(
    r"(?i)(bearer\s+)\S+"  # Authorization values
    r"|\bsr_(?:live|test)_[0-9A-Za-z]{8,}"  # Strongroom managed keys
    r"|\bwhsec_[0-9A-Za-z+/=_-]{8,}"  # webhook secrets
)
#: Integers above this have 13 digits or more and are screened as text.
_LARGEST_PLAIN_INT = 10**12
_SECRET_KEYS = frozenset(
    {"authorization", "api_key", "key", "secret", "password", "token", "master_key", "pepper"}
)


def _mask_secrets(text: str) -> str:
    return _SECRET_SHAPES.sub(lambda match: (match.group(1) or "") + "[SECRET REDACTED]", text)


def redact_value(value: Any) -> Any:
    """Mask PAN- and secret-shaped content in strings, recursively."""
    if isinstance(value, str):
        return _mask_secrets(mask_pans(value))
    if isinstance(value, dict):
        return {key: redact_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool) and value > _LARGEST_PLAIN_INT:
        return redact_value(str(value))
    return value


def _plainly_clean(values: Iterable[Any]) -> bool:
    """True when no value can hold anything ``redact_value`` would change.

    Most events (an access-log line, say) are a handful of flat strings and
    numbers: one scan of their strings joined by newlines (see
    ``may_contain_pan``) decides them, instead of two scans per string.
    """
    texts: list[str] = []
    for value in values:
        # Exact types first: an access line is only these, and comparing types
        # costs less than ``isinstance`` against a union.
        kind = type(value)
        if kind is str:
            texts.append(value)
        elif kind is int or kind is float:
            if value > _LARGEST_PLAIN_INT:
                return False
        elif value is None or kind is bool:
            continue
        elif isinstance(value, str):
            texts.append(value)
        elif isinstance(value, int | float):
            if value > _LARGEST_PLAIN_INT:
                return False
        else:
            return False
    joined = "\n".join(texts)
    if may_contain_pan(joined):
        return False
    # Four substring searches of the lowered text: a case-insensitive pattern
    # costs several times as much, trying each marker at every position.
    lowered = joined.lower()
    return not any(marker in lowered for marker in _SECRET_MARKERS)


#: Keys met before that are not secret-named, so most events skip lowering each key.
_PLAIN_KEYS: set[str] = set()
_MAX_PLAIN_KEYS: Final = 10_000


def redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: redact every value; drop values under secret-named keys."""
    clean = _plainly_clean(event_dict.values())
    if clean and _PLAIN_KEYS.issuperset(event_dict):
        return event_dict
    for key in list(event_dict):
        if key.lower() in _SECRET_KEYS:
            event_dict[key] = "[SECRET REDACTED]"
            continue
        if len(_PLAIN_KEYS) < _MAX_PLAIN_KEYS:
            _PLAIN_KEYS.add(key)
        if not clean:
            event_dict[key] = redact_value(event_dict[key])
    return event_dict


#: The last second whose date and time of day were formatted, and that text.
_stamp_prefix: tuple[int, str] = (-1, "")


def add_timestamp(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: ``timestamp`` in UTC, ISO 8601 with microseconds and ``Z``.

    The date and time of day are formatted once a second; every line then only
    adds its microseconds. (A thread that loses a race formats a second again.)
    """
    global _stamp_prefix
    now = time.time()
    second = int(now)
    cached_second, prefix = _stamp_prefix
    if second != cached_second:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _stamp_prefix = (second, prefix)
    event_dict["timestamp"] = f"{prefix}.{int((now - second) * 1_000_000):06d}Z"
    return event_dict


def _dumps(value: Any, **_: Any) -> bytes:
    return orjson.dumps(value, default=str)


class _LineWriter:
    """Writes rendered lines to a binary stream from a thread of its own.

    A write to a log file can wait on the disk: on the filesystem that also
    holds the event log, behind its fsyncs. Written on the event loop, that
    wait held up every request in flight. Here the loop only appends the line
    to a queue; the thread wakes at most every ``DELAY_SECONDS`` and writes
    everything queued in one call, in order. ``flush`` writes what is queued
    at once (at shutdown and at exit), so a clean exit loses nothing; a kill
    -9 loses at most the last ``DELAY_SECONDS`` of lines.
    """

    DELAY_SECONDS: Final = 0.01
    #: Lines held while the stream cannot keep up; past this the oldest are
    #: dropped, so a stalled log disk costs lines, never the gateway's memory.
    MAX_QUEUED_LINES: Final = 100_000

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self._lines: collections.deque[bytes] = collections.deque(maxlen=self.MAX_QUEUED_LINES)
        self._wake = threading.Event()
        self._lock = threading.Lock()
        threading.Thread(target=self._run, name="strongroom-log", daemon=True).start()

    def write(self, line: bytes) -> None:
        self._lines.append(line)
        if not self._wake.is_set():
            self._wake.set()

    def flush(self) -> None:
        with self._lock:
            lines = self._lines
            batch = [lines.popleft() for _ in range(len(lines))]
            if batch:
                # Newlines are added here, off the caller's path.
                self.stream.write(b"\n".join(batch) + b"\n")
                self.stream.flush()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            time.sleep(self.DELAY_SECONDS)
            # Cleared before the queue is taken: a line added from here on either
            # goes out with this batch or wakes the thread again.
            self._wake.clear()
            try:
                self.flush()
            except ValueError:
                # The stream was closed (at exit): nothing is left to write to.
                return
            except OSError:
                # A full disk or a broken pipe costs this batch of lines, not the
                # thread: the next batch is tried again.
                continue


class _QueuedLogger:
    """structlog logger: every level's line goes to one ``_LineWriter``."""

    def __init__(self, writer: _LineWriter) -> None:
        self._write = writer.write

    def msg(self, message: bytes) -> None:
        self._write(message)

    log = debug = info = warn = warning = error = critical = exception = fatal = failure = msg


_writer: _LineWriter | None = None


def flush_logs() -> None:
    """Write every queued log line now."""
    if _writer is not None:
        _writer.flush()


def _forget_writer() -> None:
    # A forked child has no writer thread; it starts its own when it configures logging.
    global _writer
    _writer = None


os.register_at_fork(after_in_child=_forget_writer)
atexit.register(flush_logs)


def configure_logging(level: str = "info", stream: TextIO | None = None) -> None:
    """JSON lines on stderr (or ``stream``), one object per event, redacted.

    On a binary stream (stderr has one), lines are written by a background
    thread (``_LineWriter``); call ``flush_logs`` before exiting by ``os._exit``.
    """
    global _writer
    target = stream or sys.stderr
    numeric = logging.getLevelNamesMapping()[level.upper()]
    binary = getattr(target, "buffer", None)
    # orjson renders to bytes; write them straight to the binary stream when
    # there is one, which skips a decode and an encode per line.
    renderer: Any = structlog.processors.JSONRenderer(serializer=_dumps)
    if binary is not None:
        if _writer is None or _writer.stream is not binary:
            flush_logs()
            _writer = _LineWriter(binary)
        writer = _writer
        factory: Any = lambda *_: _QueuedLogger(writer)  # noqa: E731
    else:
        renderer = structlog.processors.JSONRenderer()
        factory = structlog.PrintLoggerFactory(target)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            add_timestamp,
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    # Libraries log through the standard library; route them to the same stream
    # at warning level so uvicorn's own access log does not duplicate ours.
    logging.basicConfig(stream=target, level=logging.WARNING, force=True)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").disabled = True


def get_logger(name: str = "strongroom") -> Any:
    return structlog.get_logger(name)
