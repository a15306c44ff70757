"""Risk policy and scoring: pure models and rules, no I/O.

``validate_policy_text`` turns YAML or JSON into a ``Policy``; ``evaluate``
turns a policy and a transaction's ``Facts`` into an explained ``Decision``.
"""

from strongroom.domain.risk._source import PolicyError, PolicyInvalid
from strongroom.domain.risk.bands import Band
from strongroom.domain.risk.evaluation import Decision, FactorResult, Facts, evaluate
from strongroom.domain.risk.policy import (
    DEFAULT_POLICY,
    DEFAULT_POLICY_TEXT,
    FACTOR_KINDS,
    Policy,
    validate_policy_text,
)
from strongroom.domain.risk.records import AppliedPolicy, DecisionRecord
from strongroom.domain.risk.request import TRANSACTION, TransactionCard, TransactionRequest

__all__ = [
    "DEFAULT_POLICY",
    "DEFAULT_POLICY_TEXT",
    "FACTOR_KINDS",
    "TRANSACTION",
    "AppliedPolicy",
    "Band",
    "Decision",
    "DecisionRecord",
    "FactorResult",
    "Facts",
    "Policy",
    "PolicyError",
    "PolicyInvalid",
    "TransactionCard",
    "TransactionRequest",
    "evaluate",
    "validate_policy_text",
]
