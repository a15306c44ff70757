"""Topic names: the streams Strongroom publishes."""

from __future__ import annotations

from typing import Final

TOKENIZED: Final = "payments.tokenized"
DEAD_LETTER_SUFFIX: Final = ".dlq"


def dead_letter_topic(topic: str) -> str:
    """Where a consumer group's given-up records of ``topic`` go."""
    return topic + DEAD_LETTER_SUFFIX
