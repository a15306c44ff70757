"""SingleFlight: concurrent misses for one key share one fetch."""

from __future__ import annotations

import asyncio

import pytest

from strongroom.services.single_flight import SingleFlight


class Fetcher:
    """Counts its calls; each call waits for ``release`` before answering."""

    def __init__(self, answer: str = "value", error: Exception | None = None) -> None:
        self.calls = 0
        self.release = asyncio.Event()
        self._answer = answer
        self._error = error

    async def __call__(self) -> str:
        self.calls += 1
        await self.release.wait()
        if self._error is not None:
            raise self._error
        return f"{self._answer}-{self.calls}"


async def test_concurrent_callers_share_one_fetch() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    fetch = Fetcher()
    callers = [asyncio.create_task(flight.run("tenant-a", fetch)) for _ in range(20)]
    await asyncio.sleep(0)
    assert len(flight) == 1
    fetch.release.set()

    assert await asyncio.gather(*callers) == ["value-1"] * 20
    assert fetch.calls == 1
    assert len(flight) == 0


async def test_different_keys_fetch_separately() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    fetch = Fetcher()
    fetch.release.set()

    answers = await asyncio.gather(flight.run("a", fetch), flight.run("b", fetch))

    assert sorted(answers) == ["value-1", "value-2"]
    assert fetch.calls == 2


async def test_a_finished_fetch_is_not_reused() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    fetch = Fetcher()
    fetch.release.set()

    assert await flight.run("a", fetch) == "value-1"
    assert await flight.run("a", fetch) == "value-2"


async def test_every_waiting_caller_gets_the_fetchs_exception_and_the_next_call_retries() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    failing = Fetcher(error=ConnectionError("store down"))
    callers = [asyncio.create_task(flight.run("a", failing)) for _ in range(5)]
    await asyncio.sleep(0)
    failing.release.set()

    outcomes = await asyncio.gather(*callers, return_exceptions=True)

    assert all(isinstance(outcome, ConnectionError) for outcome in outcomes)
    assert failing.calls == 1
    working = Fetcher()
    working.release.set()
    assert await flight.run("a", working) == "value-1"


async def test_a_cancelled_caller_does_not_cancel_the_fetch_for_the_others() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    fetch = Fetcher()
    first = asyncio.create_task(flight.run("a", fetch))
    second = asyncio.create_task(flight.run("a", fetch))
    await asyncio.sleep(0)
    first.cancel()
    fetch.release.set()

    assert await second == "value-1"
    with pytest.raises(asyncio.CancelledError):
        await first
    assert fetch.calls == 1
