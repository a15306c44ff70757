"""Known cards: token descriptions remembered for a few seconds, one read per refresh."""

from __future__ import annotations

import asyncio

import pytest

from strongroom.errors import NotFound
from strongroom.services.risk_models import KNOWN_CARD_SECONDS, CardRef, KnownCards

T0 = 1_700_000_000.0


async def test_concurrent_misses_share_one_read_and_expire() -> None:
    cards = KnownCards()
    reads = 0

    async def load() -> CardRef:
        nonlocal reads
        reads += 1
        await asyncio.sleep(0.01)
        return CardRef("tok_a", "4242", "visa", "424242")

    found = await asyncio.gather(*(cards.describe("t", "tok_a", T0, load) for _ in range(20)))
    assert reads == 1
    assert {card.last4 for card in found} == {"4242"}
    assert await cards.describe("t", "tok_a", T0 + 1, load) == found[0]
    assert reads == 1
    # Another tenant's token of the same name is another card.
    await cards.describe("u", "tok_a", T0 + 1, load)
    assert reads == 2
    await cards.describe("t", "tok_a", T0 + KNOWN_CARD_SECONDS, load)
    assert reads == 3
    cards.forget_tenant("t")
    assert cards.get("t", "tok_a", T0 + KNOWN_CARD_SECONDS) is None


async def test_a_failed_read_reaches_every_waiter_and_is_not_remembered() -> None:
    cards = KnownCards(max_cards=1)

    async def missing() -> CardRef:
        await asyncio.sleep(0.01)
        raise NotFound("No such token.")

    results = await asyncio.gather(
        *(cards.describe("t", "tok_x", T0, missing) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(result, NotFound) for result in results)
    assert cards.get("t", "tok_x", T0) is None

    async def tok_y() -> CardRef:
        return CardRef("tok_y")

    async def tok_z() -> CardRef:
        return CardRef("tok_z")

    await cards.describe("t", "tok_y", T0, tok_y)
    await cards.describe("t", "tok_z", T0, tok_z)
    assert cards.get("t", "tok_y", T0) is None, "bounded: the older card made room"
    with pytest.raises(ValueError, match="max_cards"):
        KnownCards(max_cards=0)
