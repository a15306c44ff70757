"""Consumer groups on ``payments.tokenized``: delivery, ack, redelivery, dead letters.

1. A group delivers each record once to its members; every group gets every record.
2. A record not acked within its visibility timeout is delivered again, with
   ``deliveries`` counting up; an acked record never comes back.
3. After ``consumer_max_deliveries`` deliveries the record goes to the dead letters,
   which can be listed and replayed to be deliverable again.
4. An unknown topic is a 404 problem; bad group names and bodies are 422 problems.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from integration_support import Failures, error_fields, metric_value

from support import AUTH, JSON_HEADERS, TOKENIZED_URL, card_free_event
from support_app import peer
from support_problems import assert_problem

GROUPS = f"{TOKENIZED_URL}/groups"
DEAD_LETTERS = f"{TOKENIZED_URL}/dead-letters"
SHORT = 0.2


async def ingest(client: httpx.AsyncClient, count: int) -> list[str]:
    events = [card_free_event() for _ in range(count)]
    response = await client.post(
        "/v1/events", content=json.dumps({"events": events}), headers=JSON_HEADERS
    )
    assert response.status_code == 202, response.text
    return [e["event_id"] for e in events]


async def read(
    client: httpx.AsyncClient, group: str, consumer: str = "c1", **options: Any
) -> list[dict[str, Any]]:
    response = await client.post(
        f"{GROUPS}/{group}/read", json={"consumer": consumer, **options}, headers=AUTH
    )
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


async def ack(client: httpx.AsyncClient, group: str, offsets: list[int]) -> int:
    response = await client.post(f"{GROUPS}/{group}/ack", json={"offsets": offsets}, headers=AUTH)
    assert response.status_code == 200, response.text
    settled: int = response.json()["acknowledged"]
    return settled


async def dead_letters(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    response = await client.get(DEAD_LETTERS, params=params, headers=AUTH)
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def ids(deliveries: list[dict[str, Any]]) -> list[str]:
    return [d["record"]["event_id"] for d in deliveries]


def offsets(deliveries: list[dict[str, Any]]) -> list[int]:
    return [d["offset"] for d in deliveries]


@pytest.fixture
async def dying(serve: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway that gives up on a record after two deliveries."""
    async with serve(consumer_max_deliveries=2) as app, peer(app) as http:
        yield http


# -- delivery ---------------------------------------------------------------------------


async def test_a_group_delivers_every_record_once_in_offset_order(
    client: httpx.AsyncClient,
) -> None:
    sent = await ingest(client, 5)

    first = await read(client, "g1", visibility_timeout_seconds=30)
    second = await read(client, "g1", visibility_timeout_seconds=30)

    assert ids(first) == sent
    assert offsets(first) == sorted(offsets(first))
    assert all(d["deliveries"] == 1 for d in first)
    assert all(d["topic"] == "payments.tokenized" for d in first)
    assert second == []


async def test_each_group_gets_every_record(client: httpx.AsyncClient) -> None:
    sent = await ingest(client, 4)

    analytics = await read(client, "analytics")
    billing = await read(client, "billing")

    assert ids(analytics) == sent
    assert ids(billing) == sent


async def test_members_of_one_group_share_the_records(client: httpx.AsyncClient) -> None:
    sent = await ingest(client, 10)

    first = await read(client, "g1", "worker-a", limit=4)
    second = await read(client, "g1", "worker-b", limit=100)

    assert len(first) == 4
    assert set(ids(first)).isdisjoint(ids(second))
    assert ids(first) + ids(second) == sent


async def test_records_appended_later_are_delivered_next(client: httpx.AsyncClient) -> None:
    early = await ingest(client, 2)
    assert ids(await read(client, "g1")) == early

    late = await ingest(client, 3)

    assert ids(await read(client, "g1")) == late


async def test_a_new_group_starts_at_the_earliest_record(client: httpx.AsyncClient) -> None:
    sent = await ingest(client, 3)
    await read(client, "early-group")

    more = await ingest(client, 2)

    assert ids(await read(client, "late-group")) == sent + more


async def test_an_empty_topic_delivers_nothing(client: httpx.AsyncClient) -> None:
    assert await read(client, "g1") == []


async def test_ack_settles_only_pending_deliveries_of_that_group(
    client: httpx.AsyncClient,
) -> None:
    await ingest(client, 3)
    delivered = offsets(await read(client, "g1"))
    await read(client, "g2")

    assert await ack(client, "g1", delivered[:2]) == 2
    assert await ack(client, "g1", delivered[:2]) == 0
    assert await ack(client, "g1", [delivered[2], 999]) == 1
    assert await ack(client, "never-read", delivered) == 0
    assert await ack(client, "g2", delivered) == 3


# -- redelivery ---------------------------------------------------------------------------


async def test_unacked_records_are_redelivered_after_the_visibility_timeout(
    client: httpx.AsyncClient,
) -> None:
    sent = await ingest(client, 3)
    first = await read(client, "g1", visibility_timeout_seconds=SHORT)
    await ack(client, "g1", [first[0]["offset"]])

    await asyncio.sleep(SHORT + 0.1)
    again = await read(client, "g1", "c2", visibility_timeout_seconds=SHORT)
    await asyncio.sleep(SHORT + 0.1)
    third = await read(client, "g1", visibility_timeout_seconds=SHORT)

    assert ids(again) == sent[1:]
    assert [d["deliveries"] for d in again] == [2, 2]
    assert ids(third) == sent[1:]
    assert [d["deliveries"] for d in third] == [3, 3]


async def test_a_record_inside_its_visibility_timeout_is_not_redelivered(
    client: httpx.AsyncClient,
) -> None:
    await ingest(client, 1)
    await read(client, "g1", visibility_timeout_seconds=30)
    await asyncio.sleep(SHORT + 0.1)

    assert await read(client, "g1") == []


async def test_an_acked_record_is_never_redelivered(client: httpx.AsyncClient) -> None:
    await ingest(client, 2)
    first = await read(client, "g1", visibility_timeout_seconds=SHORT)
    await ack(client, "g1", offsets(first))
    await asyncio.sleep(SHORT + 0.1)

    assert await read(client, "g1") == []


# -- dead letters ---------------------------------------------------------------------------


async def _exhaust(client: httpx.AsyncClient, group: str) -> None:
    """Read without acking until the records of ``group`` went to the dead letters."""
    for _ in range(2):
        assert await read(client, group, visibility_timeout_seconds=SHORT)
        await asyncio.sleep(SHORT + 0.1)


async def test_after_max_deliveries_records_go_to_the_dead_letters(
    dying: httpx.AsyncClient,
) -> None:
    sent = await ingest(dying, 2)
    first = await read(dying, "g1", visibility_timeout_seconds=SHORT)
    await asyncio.sleep(SHORT + 0.1)
    second = await read(dying, "g1", visibility_timeout_seconds=SHORT)
    await asyncio.sleep(SHORT + 0.1)

    third = await read(dying, "g1", visibility_timeout_seconds=SHORT)
    letters = await dead_letters(dying)

    assert [d["deliveries"] for d in first + second] == [1, 1, 2, 2]
    assert third == []
    assert [letter["offset"] for letter in letters] == offsets(first)
    for letter in letters:
        assert letter["group"] == "g1"
        assert letter["topic"] == "payments.tokenized"
        assert letter["deliveries"] == 2
        assert letter["replayed"] is False
        assert isinstance(letter["dead_letter_offset"], int)
    dlq = await dying.get("/v1/streams/payments.tokenized.dlq", headers=AUTH)
    assert dlq.status_code == 200
    assert [r["record"]["record_id"] for r in dlq.json()["data"]] == sent


async def test_dead_letters_are_listed_per_group(dying: httpx.AsyncClient) -> None:
    await ingest(dying, 1)
    await _exhaust(dying, "g1")
    await read(dying, "g1", visibility_timeout_seconds=SHORT)
    await read(dying, "g2", visibility_timeout_seconds=30)

    assert [d["group"] for d in await dead_letters(dying)] == ["g1"]
    assert len(await dead_letters(dying, group="g1")) == 1
    assert await dead_letters(dying, group="g2") == []


async def test_replay_makes_dead_letters_deliverable_again(dying: httpx.AsyncClient) -> None:
    sent = await ingest(dying, 2)
    await _exhaust(dying, "g1")
    assert await read(dying, "g1") == []

    replay = await dying.post(f"{GROUPS}/g1/dead-letters/replay", json={}, headers=AUTH)
    redelivered = await read(dying, "g1", visibility_timeout_seconds=30)
    again = await dying.post(f"{GROUPS}/g1/dead-letters/replay", json={}, headers=AUTH)

    assert replay.status_code == 200
    assert replay.json() == {"replayed": 2}
    assert ids(redelivered) == sent
    assert all(d["deliveries"] == 1 for d in redelivered)
    assert all(letter["replayed"] for letter in await dead_letters(dying))
    assert again.json() == {"replayed": 0}
    assert await ack(dying, "g1", offsets(redelivered)) == 2


async def test_replay_can_pick_dead_letters_by_offset(dying: httpx.AsyncClient) -> None:
    sent = await ingest(dying, 3)
    await _exhaust(dying, "g1")
    await read(dying, "g1", visibility_timeout_seconds=SHORT)
    letters = await dead_letters(dying)
    chosen = letters[1]["dead_letter_offset"]

    replay = await dying.post(
        f"{GROUPS}/g1/dead-letters/replay", json={"dead_letter_offsets": [chosen]}, headers=AUTH
    )

    assert replay.json() == {"replayed": 1}
    assert ids(await read(dying, "g1")) == [sent[1]]
    assert [letter["replayed"] for letter in await dead_letters(dying)] == [False, True, False]


async def test_replay_for_another_group_touches_nothing(dying: httpx.AsyncClient) -> None:
    await ingest(dying, 1)
    await _exhaust(dying, "g1")
    await read(dying, "g1", visibility_timeout_seconds=SHORT)

    replay = await dying.post(f"{GROUPS}/g2/dead-letters/replay", json={}, headers=AUTH)

    assert replay.json() == {"replayed": 0}
    assert [letter["replayed"] for letter in await dead_letters(dying)] == [False]


# -- refusals -------------------------------------------------------------------------------

UNKNOWN_TOPIC_CALLS = [
    ("GET", "/v1/streams/{topic}", None),
    ("POST", "/v1/streams/{topic}/groups/g1/read", {"consumer": "c1"}),
    ("POST", "/v1/streams/{topic}/groups/g1/ack", {"offsets": [0]}),
    ("GET", "/v1/streams/{topic}/dead-letters", None),
    ("POST", "/v1/streams/{topic}/groups/g1/dead-letters/replay", {}),
]


async def test_an_unknown_topic_is_a_404_problem(client: httpx.AsyncClient) -> None:
    failures = Failures()
    for topic in ("payments.rawer", "nope", "x" * 100, "payments.tokenized.other"):
        for method, path, body in UNKNOWN_TOPIC_CALLS:
            with failures.case(f"{method} {path.format(topic=topic)}"):
                response = await client.request(
                    method, path.format(topic=topic), json=body, headers=AUTH
                )
                assert_problem(response, 404, "not_found")
    failures.check()


async def test_topics_without_consumer_groups_refuse_group_calls_with_404(
    client: httpx.AsyncClient,
) -> None:
    failures = Failures()
    for topic in ("payments.tokenized.dlq", "payments.audit"):
        for method, path, body in UNKNOWN_TOPIC_CALLS[1:]:
            with failures.case(f"{method} {path.format(topic=topic)}"):
                response = await client.request(
                    method, path.format(topic=topic), json=body, headers=AUTH
                )
                assert_problem(response, 404, "not_found")
    failures.check()


async def test_an_unknown_topic_name_is_not_echoed(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/streams/topicQZXsentinel", headers=AUTH)

    assert_problem(response, 404, "not_found")
    assert "QZXsentinel" not in response.text


BAD_GROUP_NAMES = ["-leading-dash", ".leading-dot", "has space", "g" * 65, "grp$", "grp%3Ax", "ünï"]


async def test_a_bad_group_name_is_a_422_problem(client: httpx.AsyncClient) -> None:
    failures = Failures()
    for group in BAD_GROUP_NAMES:
        for action in ("read", "ack", "dead-letters/replay"):
            with failures.case(f"{group!r} {action}"):
                body = {"offsets": [0]} if action == "ack" else {}
                response = await client.post(f"{GROUPS}/{group}/{action}", json=body, headers=AUTH)
                problem = assert_problem(response, 422, "validation_failed")
                assert any("group" in field for field in error_fields(problem)), problem
    failures.check()


async def test_a_bad_group_filter_on_dead_letters_is_a_422_problem(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get(DEAD_LETTERS, params={"group": "bad group"}, headers=AUTH)

    assert_problem(response, 422, "validation_failed")


BAD_READ_BODIES: list[tuple[dict[str, Any], str]] = [
    ({"consumer": "has space"}, "consumer"),
    ({"consumer": "c" * 65}, "consumer"),
    ({"consumer": ""}, "consumer"),
    ({"limit": 0}, "limit"),
    ({"limit": 1001}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"visibility_timeout_seconds": 0}, "visibility_timeout_seconds"),
    ({"visibility_timeout_seconds": -1}, "visibility_timeout_seconds"),
    ({"visibility_timeout_seconds": 43_201}, "visibility_timeout_seconds"),
    ({"surprise": 1}, "surprise"),
]


async def test_a_bad_read_body_is_a_422_problem(client: httpx.AsyncClient) -> None:
    await ingest(client, 1)
    failures = Failures()
    for body, field in BAD_READ_BODIES:
        with failures.case(repr(body)[:60]):
            response = await client.post(f"{GROUPS}/g1/read", json=body, headers=AUTH)
            problem = assert_problem(response, 422, "validation_failed")
            assert any(f.endswith(field) for f in error_fields(problem)), problem
    failures.check()
    # The refused reads delivered nothing: the record is still there for the group.
    assert len(await read(client, "g1")) == 1


async def test_a_bad_ack_body_is_a_422_problem(client: httpx.AsyncClient) -> None:
    failures = Failures()
    for body in ({}, {"offsets": []}, {"offsets": [-1]}, {"offsets": "0"}, {"x": 1}, None):
        with failures.case(repr(body)):
            response = await client.post(f"{GROUPS}/g1/ack", json=body, headers=AUTH)
            assert_problem(response, 422, "validation_failed")
    failures.check()


@pytest.mark.parametrize("offset", [2**63], ids=["2^63"])
async def test_acking_an_offset_beyond_any_record_is_not_a_server_error(
    client: httpx.AsyncClient, offset: int
) -> None:
    await ingest(client, 1)
    await read(client, "g1")

    response = await client.post(f"{GROUPS}/g1/ack", json={"offsets": [offset]}, headers=AUTH)

    # No record has such an offset: settling nothing, or a 422 naming the field, are
    # both answers; a 500 is not.
    if response.status_code == 200:
        assert response.json() == {"acknowledged": 0}
    else:
        assert_problem(response, 422, "validation_failed")


async def test_a_read_body_that_is_not_json_is_a_422_problem(client: httpx.AsyncClient) -> None:
    response = await client.post(f"{GROUPS}/g1/read", content=b"{nope", headers=JSON_HEADERS)

    assert_problem(response, 422, "validation_failed")


async def test_group_lag_and_pending_are_exported_as_metrics(client: httpx.AsyncClient) -> None:
    await ingest(client, 5)
    delivered = await read(client, "g1", limit=3)
    await ack(client, "g1", offsets(delivered)[:1])

    lag = await metric_value(
        client, "strongroom_consumer_lag_records", topic="payments.tokenized", group="g1"
    )
    pending = await metric_value(
        client, "strongroom_consumer_pending_records", topic="payments.tokenized", group="g1"
    )
    dead = await metric_value(
        client, "strongroom_dead_letters", topic="payments.tokenized", group="g1"
    )
    assert (lag, pending, dead) == (2, 2, 0)
