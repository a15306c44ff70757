"""Topic names: the streams Strongroom publishes."""

from __future__ import annotations

from typing import Final

TOKENIZED: Final = "payments.tokenized"
#: Original events that carried a card, each sealed whole under the tenant's data key.
RAW: Final = "payments.raw"
AUDIT: Final = "payments.audit"
#: Every risk decision, card-free (``DecisionRecord.public``), keyed by merchant.
RISK_DECISIONS: Final = "risk.decisions"
#: Processor-health band changes, keyed by processor.
RISK_SIGNALS: Final = "risk.signals"
#: Stream records of actions that belong to no tenant (platform administration).
PLATFORM_TENANT: Final = "platform"
DEAD_LETTER_SUFFIX: Final = ".dlq"


def dead_letter_topic(topic: str) -> str:
    """Where a consumer group's given-up records of ``topic`` go."""
    return topic + DEAD_LETTER_SUFFIX
