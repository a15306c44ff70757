"""The public namespace of ``strongroom.domain.risk`` and stored-record parsing."""

from __future__ import annotations

import pytest
from risk_support import facts

import strongroom.domain.risk as risk
from strongroom.domain.risk import Band, Decision, Facts


def test_all_is_sorted_and_complete() -> None:
    assert risk.__all__ == sorted(risk.__all__, key=lambda name: (not name.isupper(), name))
    public = {name for name in vars(risk) if not name.startswith("_")}
    modules = {"bands", "evaluation", "policy", "records", "request"}
    assert public - modules == set(risk.__all__)


def test_bands_are_ordered() -> None:
    assert [band.rank for band in Band] == [0, 1, 2, 3]
    assert Band.HIGH.at_least(Band.ELEVATED)
    assert not Band.ELEVATED.at_least(Band.HIGH)


def test_stored_facts_are_checked() -> None:
    stored = facts(processor_band=Band.HIGH, velocity={"v": 2}).to_dict()
    assert Facts.from_dict(stored).processor_band is Band.HIGH
    with pytest.raises(ValueError, match="unknown fields"):
        Facts.from_dict({**stored, "pan": "x"})
    with pytest.raises(ValueError, match="integers"):
        Facts.from_dict({**stored, "velocity": {"v": "2"}})
    with pytest.raises(ValueError, match="incomplete"):
        Facts.from_dict({"amount": 1})
    with pytest.raises(ValueError, match="integer amount"):
        Facts.from_dict({**stored, "amount": 1.5})
    with pytest.raises(ValueError, match="unknown decision"):
        Decision.from_dict({"decision": "maybe"})
