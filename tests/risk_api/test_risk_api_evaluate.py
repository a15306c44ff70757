"""``POST /v1/transactions/evaluate``, ``GET /v1/decisions/{trace_id}`` and replay, in process."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from risk_api_support import (
    EVALUATE,
    assert_explained,
    card_number,
    evaluate,
    factor,
    new_card,
    tokenize,
    transaction,
)

from strongroom.domain.cards import contains_pan
from support import AUTH


async def test_a_new_card_number_is_tokenized_and_never_answered(http: httpx.AsyncClient) -> None:
    number = card_number()
    answer = await evaluate(http, transaction(new_card(number)))
    assert_explained(answer)
    assert answer["card"]["token"].startswith("tok_")
    assert answer["card"]["last4"] == number[-4:]
    assert answer["card"]["brand"] == "visa"
    assert number not in json.dumps(answer)
    assert factor(answer, "first_seen_card")["value"] is True
    # The vault made the same token a direct tokenization returns.
    assert await tokenize(http, number) == answer["card"]["token"]


async def test_a_known_token_is_evaluated(http: httpx.AsyncClient) -> None:
    token = await tokenize(http)
    answer = await evaluate(http, transaction({"token": token}))
    assert_explained(answer)
    assert answer["card"]["token"] == token
    assert answer["card"]["last4"] is not None


async def test_an_unknown_token_is_422_naming_card_token(http: httpx.AsyncClient) -> None:
    response = await http.post(
        EVALUATE, json=transaction({"token": "tok_" + "0" * 24}), headers=AUTH
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert [e["field"] for e in response.json()["errors"]] == ["card.token"]


async def test_answer_fields_and_invariants(http: httpx.AsyncClient) -> None:
    answer = await evaluate(http, transaction(amount=900_000))
    assert_explained(answer)
    assert answer["decision"] in ("review", "decline")
    assert "large_amount" in {f["name"] for f in answer["factors"] if f["contribution"]}
    assert answer["reasons"][0] == factor(answer, "large_amount")["reason"] or answer["reasons"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", answer["evaluated_at"])


async def test_card_velocity_triggers_after_the_threshold(http: httpx.AsyncClient) -> None:
    token = await tokenize(http)
    answers = [await evaluate(http, transaction({"token": token})) for _ in range(7)]
    values = [factor(a, "card_velocity")["value"] for a in answers]
    assert values == [1, 2, 3, 4, 5, 6, 7]
    assert [factor(a, "card_velocity")["contribution"] > 0 for a in answers] == [False] * 5 + [
        True
    ] * 2
    assert answers[-1]["reasons"][0].startswith("The card was used 7 times")
    for answer in answers:
        assert_explained(answer)


async def test_idempotency_key_replays_without_counting_twice(http: httpx.AsyncClient) -> None:
    token = await tokenize(http)
    body = transaction({"token": token})
    headers = {"Idempotency-Key": "idem-" + body["transaction_id"]}
    first = await evaluate(http, body, headers=headers)
    again = await http.post(EVALUATE, json=body, headers={**AUTH, **headers})
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first
    later = await evaluate(http, transaction({"token": token}))
    assert factor(later, "card_velocity")["value"] == 2
    # The same key with another body is refused.
    other = await http.post(EVALUATE, json={**body, "amount": 5}, headers={**AUTH, **headers})
    assert other.status_code == 422
    assert other.json()["type"].endswith("idempotency_conflict")


async def test_a_retried_transaction_id_is_the_same_decision(http: httpx.AsyncClient) -> None:
    body = transaction()
    first = await evaluate(http, body)
    assert (await evaluate(http, body))["trace_id"] == first["trace_id"]


async def test_a_stored_decision_has_its_inputs_tokenized(http: httpx.AsyncClient) -> None:
    number = card_number()
    answer = await evaluate(http, transaction(new_card(number), metadata={"order": "o-1"}))
    response = await http.get(f"/v1/decisions/{answer['trace_id']}", headers=AUTH)
    assert response.status_code == 200, response.text
    stored = response.json()
    assert {k: v for k, v in stored.items() if k != "inputs"} == answer
    inputs = stored["inputs"]
    assert inputs["card_token"] == answer["card"]["token"]
    assert inputs["ip_hash"]
    assert "203.0.113.7" not in response.text
    assert inputs["metadata"] == {"order": "o-1"}
    assert number not in response.text
    assert not contains_pan(response.text)


async def test_replay_reproduces_the_decision(http: httpx.AsyncClient) -> None:
    token = await tokenize(http)
    for _ in range(6):
        answer = await evaluate(http, transaction({"token": token}, amount=400_000))
    response = await http.post(f"/v1/decisions/{answer['trace_id']}/replay", headers=AUTH)
    assert response.status_code == 200, response.text
    replay = response.json()
    assert replay["reproduced"] is True
    assert replay["replayed"] == replay["stored"]
    assert replay["stored"]["score"] == answer["score"]


async def test_unknown_and_malformed_trace_ids(http: httpx.AsyncClient) -> None:
    missing = await http.get("/v1/decisions/trc_" + "a" * 24, headers=AUTH)
    assert missing.status_code == 404
    bad = await http.get("/v1/decisions/nope", headers=AUTH)
    assert bad.status_code == 422
    replay = await http.post("/v1/decisions/trc_" + "a" * 24 + "/replay", headers=AUTH)
    assert replay.status_code == 404


async def test_decisions_feed_the_risk_decisions_topic(http: httpx.AsyncClient) -> None:
    answer = await evaluate(http, transaction())
    page = await http.get("/v1/streams/risk.decisions", params={"limit": 1000}, headers=AUTH)
    assert page.status_code == 200, page.text
    records = [r["record"] for r in page.json()["data"]]
    assert answer["trace_id"] in {r["trace_id"] for r in records}


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'{"transaction_id": 1}',
        b'{"transaction_id":"t","amount":-1,"currency":"EUR","merchant_id_hash":"m","card":{}}',
        json.dumps(transaction(amount=10**20)).encode(),
        json.dumps(transaction(currency="euro")).encode(),
        json.dumps(transaction(ip="999.1.1.1")).encode(),
        json.dumps(transaction(country="Germany")).encode(),
        json.dumps(transaction(card={"number": "4111", "exp_month": 1, "exp_year": 2040})).encode(),
        json.dumps(transaction(card={"token": "tok_x", "number": "1"})).encode(),
        json.dumps(transaction(unknown=1)).encode(),
        json.dumps(transaction(card=new_card(), metadata={"x": card_number()})).encode(),
        json.dumps({**transaction(), "cvv": "123"}).encode(),
    ],
)
async def test_bad_bodies_are_4xx_never_500(http: httpx.AsyncClient, body: bytes) -> None:
    response = await http.post(
        EVALUATE, content=body, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert 400 <= response.status_code < 500, response.text
    # The request id is random hex whose digits may pass the Luhn check; the rest
    # of the problem must not hold anything that looks like a card number.
    problem = {k: v for k, v in response.json().items() if k != "request_id"}
    assert not contains_pan(json.dumps(problem))


async def test_a_bad_idempotency_key_is_422(http: httpx.AsyncClient) -> None:
    response = await http.post(
        EVALUATE, json=transaction(), headers={**AUTH, "Idempotency-Key": "x" * 300}
    )
    assert response.status_code == 422


async def test_planted_card_numbers_leave_no_trace_in_answers(http: httpx.AsyncClient) -> None:
    """Evaluate with card numbers, then read back everything risk shows: no number anywhere."""
    numbers = [card_number() for _ in range(5)]
    texts = []
    for number in numbers:
        response = await http.post(EVALUATE, json=transaction(new_card(number)), headers=AUTH)
        assert response.status_code == 200
        texts.append(response.text)
        trace = response.json()["trace_id"]
        texts.append((await http.get(f"/v1/decisions/{trace}", headers=AUTH)).text)
        texts.append((await http.post(f"/v1/decisions/{trace}/replay", headers=AUTH)).text)
    for topic in ("risk.decisions", "risk.signals", "payments.audit"):
        page = await http.get(f"/v1/streams/{topic}", params={"limit": 1000}, headers=AUTH)
        texts.append(page.text)
    for text in texts:
        assert not contains_pan(text), text
    # Metrics hold float timestamps whose digits can pass the Luhn check: look
    # for the planted numbers themselves there.
    texts.append((await http.get("/metrics")).text)
    everything = "\n".join(texts)
    for number in numbers:
        assert number not in everything
        assert number[6:] not in everything
