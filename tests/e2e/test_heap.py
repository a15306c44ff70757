"""The served process sets its start-up heap aside from the cycle collector."""

from __future__ import annotations

import gc
import re

import httpx

from strongroom.cli.serve import YOUNG_COLLECTION_THRESHOLD, settle_heap
from support import GatewayProcess

_FROZEN = re.compile(r"^strongroom_gc_frozen_objects (\S+)$", re.MULTILINE)


def test_a_started_gateway_has_frozen_its_start_up_objects(gateway: GatewayProcess) -> None:
    text = httpx.get(f"{gateway.url}/metrics", timeout=10).text

    match = _FROZEN.search(text)
    assert match is not None
    # Modules, the app and its stores: tens of thousands of objects, not a handful.
    assert float(match.group(1)) > 10_000


def test_settle_heap_freezes_what_exists_and_leaves_new_objects_collectable() -> None:
    before = gc.get_freeze_count()
    threshold = gc.get_threshold()
    try:
        settle_heap()
        frozen = gc.get_freeze_count()
        assert frozen > before
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        # A cycle made after the freeze is still found and freed.
        assert gc.collect() >= 1
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_settle_heap_makes_young_collections_rarer_and_keeps_the_older_thresholds() -> None:
    threshold = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        settle_heap()
        assert gc.get_threshold() == (YOUNG_COLLECTION_THRESHOLD, 10, 10)
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
