"""Two gateways sharing velocity and seen cards through a real Redis."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis
from risk_support import T0, hash_ip, request

from strongroom.adapters.velocity_redis import RedisSeenCards, RedisVelocityCounter
from strongroom.services.risk import MemoryDecisionStore, MemoryPolicyStore, RiskService

TENANT = "ten_a"


def gateway(client: Redis, prefix: str) -> RiskService:
    return RiskService(
        policies=MemoryPolicyStore(),
        decisions=MemoryDecisionStore(),
        velocity=RedisVelocityCounter(client, prefix=prefix + "velocity:"),
        seen_cards=RedisSeenCards(client, prefix=prefix + "seen:"),
        hash_ip=hash_ip,
    )


def factor(answer: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in answer["factors"] if f["name"] == name)


async def test_two_gateways_see_the_same_counters(
    redis_client: Redis, second_redis_client: Redis, redis_prefix: str
) -> None:
    first, second = gateway(redis_client, redis_prefix), gateway(second_redis_client, redis_prefix)
    answers = []
    for n in range(6):
        risk = first if n % 2 == 0 else second
        answers.append((await risk.evaluate(TENANT, request(f"t{n}"), T0 + n)).answer())
    assert [factor(a, "card_velocity")["value"] for a in answers] == [1, 2, 3, 4, 5, 6]
    assert [factor(a, "first_seen_card")["value"] for a in answers] == [True] + [False] * 5
    assert answers[-1]["reasons"][0] == (
        "The card was used 6 times in the last 10 minutes, above the limit of 5."
    )
    assert factor(answers[-1], "card_amount_24h")["value"] == 6_000


async def test_a_transaction_counts_once_across_gateways(
    redis_client: Redis, second_redis_client: Redis, redis_prefix: str
) -> None:
    first, second = gateway(redis_client, redis_prefix), gateway(second_redis_client, redis_prefix)
    one = (await first.evaluate(TENANT, request("t1"), T0)).answer()
    # The second gateway has not stored this decision (its store is its own here),
    # so it evaluates again; the shared counters still hold the transaction once.
    again = (await second.evaluate(TENANT, request("t1"), T0 + 1)).answer()
    assert factor(again, "card_velocity")["value"] == factor(one, "card_velocity")["value"] == 1
    assert factor(again, "first_seen_card")["value"] is True
    both = await asyncio.gather(
        *((first if n % 2 else second).evaluate(TENANT, request(f"c{n}"), T0 + 2) for n in range(8))
    )
    counts = sorted(factor(r.answer(), "card_velocity")["value"] for r in both)
    assert counts == list(range(2, 10))
