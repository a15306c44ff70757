"""Log lines are written by a thread of their own: a slow log file never holds up the caller.

1. Lines come out whole, in the order they were logged, each ending in a newline.
2. ``flush`` writes everything queued at once; the thread writes it within its delay.
3. A write that blocks (a disk busy with fsyncs) delays only the log thread.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable

from strongroom.observability.logging import _LineWriter, _QueuedLogger


class _SlowStream(io.BytesIO):
    """A binary stream whose every write takes ``delay`` seconds, like a busy disk."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.writes = 0
        self.lock = threading.Lock()

    def write(self, data: bytes) -> int:  # type: ignore[override]
        time.sleep(self.delay)
        with self.lock:
            self.writes += 1
            return super().write(data)

    def text(self) -> str:
        with self.lock:
            return self.getvalue().decode()


def _wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.005)


def test_lines_arrive_whole_and_in_order() -> None:
    stream = _SlowStream(0.0)
    logger = _QueuedLogger(_LineWriter(stream))
    for number in range(500):
        getattr(logger, ("info", "warning", "error", "msg")[number % 4])(b"line %d" % number)
    expected = "".join(f"line {number}\n" for number in range(500))
    _wait_for(lambda: stream.text() == expected)
    assert stream.text() == expected


def test_the_thread_writes_queued_lines_in_few_writes() -> None:
    stream = _SlowStream(0.0)
    writer = _LineWriter(stream)
    for number in range(1000):
        writer.write(b"%d" % number)
    _wait_for(lambda: stream.text().count("\n") == 1000)
    assert stream.text().count("\n") == 1000
    assert stream.writes < 50


def test_flush_writes_everything_queued_at_once() -> None:
    stream = _SlowStream(0.0)
    writer = _LineWriter(stream)
    writer.write(b"first")
    writer.write(b"second")
    writer.flush()
    assert stream.text() == "first\nsecond\n"


def test_a_blocking_stream_does_not_hold_up_the_caller() -> None:
    stream = _SlowStream(0.2)
    logger = _QueuedLogger(_LineWriter(stream))
    started = time.perf_counter()
    for number in range(100):
        logger.info(b"request %d" % number)
    elapsed = time.perf_counter() - started
    assert elapsed < 0.2, f"logging 100 lines took {elapsed:.3f} s behind a slow stream"
    _wait_for(lambda: stream.text().count("\n") == 100)
    assert stream.text().count("\n") == 100


class _FailingOnce(_SlowStream):
    """A stream whose first write fails, as on a full disk."""

    def __init__(self) -> None:
        super().__init__(0.0)
        self.failed = False

    def write(self, data: bytes) -> int:  # type: ignore[override]
        if not self.failed:
            self.failed = True
            raise OSError(28, "No space left on device")
        return super().write(data)


def test_a_failed_write_costs_its_batch_not_the_thread() -> None:
    stream = _FailingOnce()
    writer = _LineWriter(stream)
    writer.write(b"lost")
    _wait_for(lambda: stream.failed)
    time.sleep(2 * _LineWriter.DELAY_SECONDS)
    writer.write(b"kept")
    _wait_for(lambda: stream.text() == "kept\n")
    assert stream.text() == "kept\n"


def test_a_stalled_stream_holds_a_bounded_number_of_lines() -> None:
    stream = _SlowStream(0.5)
    writer = _LineWriter(stream)
    writer.write(b"first")
    # The thread is now inside a write that takes half a second.
    _wait_for(lambda: not writer._lines)
    for number in range(_LineWriter.MAX_QUEUED_LINES + 1000):
        writer.write(b"%d" % number)
    writer.flush()
    written = stream.text().splitlines()
    assert written[0] == "first"
    assert written[1] == "1000", "the oldest queued lines are the ones dropped"
    assert written[-1] == str(_LineWriter.MAX_QUEUED_LINES + 999)
    assert len(written) == 1 + _LineWriter.MAX_QUEUED_LINES
