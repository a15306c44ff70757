"""Health bands: how troubled a processor looks, in four ordered steps."""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class Band(StrEnum):
    """A processor-health band, ordered from ``low`` to ``critical``."""

    LOW = "low"
    ELEVATED = "elevated"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """0 for ``low`` up to 3 for ``critical``: bands compare by rank."""
        return _RANK[self]

    def at_least(self, other: Band) -> bool:
        """True when this band is ``other`` or worse."""
        return _RANK[self] >= _RANK[other]


_RANK: Final[dict[Band, int]] = {band: rank for rank, band in enumerate(Band)}
