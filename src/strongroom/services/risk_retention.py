"""Decision retention: decisions older than the retention are deleted in the background.

Stored decisions hold tokenized inputs and hashed identifiers, never card
numbers, but they are still a record of a customer's payments: they are kept
as long as disputes and investigations need them
(``STRONGROOM_RISK_DECISION_RETENTION_DAYS``) and no longer.

Rules:

1. A decision stored more than ``retention_seconds`` ago (by the store's
   clock) is deleted by the first prune after that; prunes run every
   ``interval_seconds``, the first ``first_delay_seconds`` after ``start``, so
   a short-lived command that opens the store never prunes.
2. A failed prune is reported to ``on_failure`` and tried again at the next
   interval; what it deleted before failing stays deleted.
3. ``aclose`` stops the loop; a prune in progress is cancelled between
   statements, never halfway through one (each delete is its own transaction).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Final

from strongroom.errors import StrongroomError
from strongroom.ports import Clock
from strongroom.services.risk_stores import DecisionJournal

DAY_SECONDS: Final = 86_400
DEFAULT_RETENTION_DAYS: Final = 400
#: Below a month, a dispute or an incident review could outlive the decision it needs;
#: the floor also keeps a typo such as 0 from deleting every decision at once.
MIN_RETENTION_DAYS: Final = 30
DEFAULT_PRUNE_INTERVAL_SECONDS: Final = 3600.0
DEFAULT_FIRST_PRUNE_SECONDS: Final = 60.0


class DecisionPruner:
    """Deletes decisions older than the retention, now and then (module rules)."""

    def __init__(
        self,
        store: DecisionJournal,
        clock: Clock,
        *,
        retention_seconds: float,
        interval_seconds: float = DEFAULT_PRUNE_INTERVAL_SECONDS,
        first_delay_seconds: float = DEFAULT_FIRST_PRUNE_SECONDS,
        on_failure: Callable[[StrongroomError], None] | None = None,
    ) -> None:
        if retention_seconds <= 0:
            raise ValueError("retention_seconds must be positive")
        if interval_seconds <= 0 or first_delay_seconds < 0:
            raise ValueError("the prune interval must be positive and the first delay not negative")
        self._store = store
        self._clock = clock
        self.retention_seconds = retention_seconds
        self._interval = interval_seconds
        self._first_delay = first_delay_seconds
        self._on_failure = on_failure
        self._task: asyncio.Task[None] | None = None
        #: Decisions deleted by this pruner so far.
        self.pruned = 0

    async def prune_once(self) -> int:
        """Delete what is past the retention now; returns how many went.

        Raises:
            StorageUnavailable: the store failed.
        """
        deleted = await self._store.prune(self._clock.now() - self.retention_seconds)
        self.pruned += deleted
        return deleted

    def start(self) -> None:
        """Start the loop on the running event loop (once)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="strongroom-risk-decision-pruner"
            )

    async def _run(self) -> None:
        await asyncio.sleep(self._first_delay)
        while True:
            try:
                await self.prune_once()
            except StrongroomError as exc:
                if self._on_failure is not None:
                    self._on_failure(exc)
            await asyncio.sleep(self._interval)

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
