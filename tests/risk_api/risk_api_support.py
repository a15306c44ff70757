"""Builders shared by the risk API tests: transactions, card numbers and answers."""

from __future__ import annotations

import secrets
import uuid
from typing import Any, Final

import httpx

from support import AUTH

EVALUATE: Final = "/v1/transactions/evaluate"
ANSWER_FIELDS: Final = {
    "decision",
    "score",
    "trace_id",
    "transaction_id",
    "policy_version",
    "factors",
    "reasons",
    "card",
    "evaluated_at",
}
FACTOR_FIELDS: Final = {"name", "value", "threshold", "weight", "contribution", "reason"}


def card_number() -> str:
    """A Luhn-valid Visa number no other test uses."""
    body = "4" + "".join(str(secrets.randbelow(10)) for _ in range(14))
    total = 0
    for index, char in enumerate(reversed(body)):
        digit = int(char)
        if index % 2 == 0:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return body + str((10 - total % 10) % 10)


def new_card(number: str | None = None) -> dict[str, Any]:
    return {"number": number or card_number(), "exp_month": 12, "exp_year": 2040}


def transaction(card: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "transaction_id": "txn_" + uuid.uuid4().hex,
        "amount": 1_000,
        "currency": "EUR",
        "merchant_id_hash": "m_" + uuid.uuid4().hex,
        "card": card or new_card(),
        "device_id": "dev_" + uuid.uuid4().hex[:12],
        "ip": "203.0.113.7",
        "country": "DE",
        "channel": "web",
    }
    body.update(overrides)
    return body


async def evaluate(
    http: httpx.AsyncClient,
    body: dict[str, Any],
    *,
    headers: dict[str, str] | None = None,
    status: int = 200,
) -> dict[str, Any]:
    response = await http.post(EVALUATE, json=body, headers={**AUTH, **(headers or {})})
    assert response.status_code == status, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def tokenize(http: httpx.AsyncClient, number: str | None = None) -> str:
    response = await http.post("/v1/tokens", json=new_card(number), headers=AUTH)
    assert response.status_code in (200, 201), response.text
    token: str = response.json()["token"]
    return token


def factor(answer: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(f for f in answer["factors"] if f["name"] == name)
    return found


def assert_explained(answer: dict[str, Any]) -> None:
    """The answer's shape, and the invariants that make it checkable."""
    assert set(answer) >= ANSWER_FIELDS, answer
    assert answer["decision"] in ("approve", "review", "decline")
    assert 0 <= answer["score"] <= 100
    assert answer["trace_id"].startswith("trc_")
    for item in answer["factors"]:
        assert set(item) >= FACTOR_FIELDS, item
    assert sum(f["contribution"] for f in answer["factors"]) == answer["score"]
    assert set(answer["reasons"]) <= {f["reason"] for f in answer["factors"]}
