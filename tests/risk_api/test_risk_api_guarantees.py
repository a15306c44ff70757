"""Evaluate's guarantees in process: one decision per Idempotency-Key under concurrency,
the issuing-country check, erasure of a tenant's risk data, decision retention, and a
known card tokenized without a write."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from risk_api_support import EVALUATE, evaluate, factor, new_card, tokenize, transaction
from sqlalchemy import text

from strongroom.config import load_settings
from strongroom.domain.access import Role
from strongroom.domain.topics import RISK_DECISIONS
from strongroom.errors import ConfigurationError
from strongroom.ports import AuditQuery
from support import AUTH, bearer
from support_app import InProcessGateway

ONE_FACTOR_MISMATCH = """\
review_threshold: 10
decline_threshold: 90
factors:
  - name: card_country_mismatch
    kind: country_mismatch
    weight: 40
"""


async def test_concurrent_evaluations_with_one_idempotency_key_make_one_decision(
    app_http: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, http = app_http
    body = transaction({"token": await tokenize(http)})
    headers = {**AUTH, "Idempotency-Key": "race-1"}
    responses = await asyncio.gather(
        *(http.post(EVALUATE, json=body, headers=headers) for _ in range(24))
    )
    assert {response.status_code for response in responses} == {200}
    answers = [response.json() for response in responses]
    assert len({answer["trace_id"] for answer in answers}) == 1
    replayed = [response.headers.get("Idempotent-Replayed") for response in responses]
    assert replayed.count(None) == 1
    assert replayed.count("true") == 23
    # The card was counted once: the single decision saw one use.
    assert factor(answers[0], "card_velocity")["value"] == 1
    state = InProcessGateway(app, http).state
    records = await state.log.read(RISK_DECISIONS, tenant="default", after=None, limit=100)
    assert [record.record_id for record in records] == [answers[0]["trace_id"]]


async def test_one_idempotency_key_with_other_bodies_at_once_is_one_decision_and_422s(
    http: httpx.AsyncClient,
) -> None:
    token = await tokenize(http)
    headers = {**AUTH, "Idempotency-Key": "race-2"}
    bodies = [transaction({"token": token}) for _ in range(8)]
    responses = await asyncio.gather(
        *(http.post(EVALUATE, json=body, headers=headers) for body in bodies)
    )
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200] + [422] * 7, [r.text for r in responses]
    refused = next(r for r in responses if r.status_code == 422).json()
    assert refused["errors"][0]["field"] == "transaction_id"


@pytest.mark.parametrize(
    ("issuer", "country", "triggered", "reason"),
    [
        ("US", "DE", True, "The card was issued in US but the transaction is in DE."),
        ("DE", "DE", False, "The card was issued in DE, where the transaction is."),
        (
            None,
            "DE",
            False,
            "The card-issuing or the transaction country is unknown, so they were not compared.",
        ),
        (
            "US",
            None,
            False,
            "The card-issuing or the transaction country is unknown, so they were not compared.",
        ),
    ],
)
async def test_country_mismatch_fires_only_when_both_countries_are_known_and_differ(
    http: httpx.AsyncClient, issuer: str | None, country: str | None, triggered: bool, reason: str
) -> None:
    card: dict[str, Any] = {"token": await tokenize(http)}
    if issuer is not None:
        card["issuer_country"] = issuer
    answer = await evaluate(http, transaction(card, country=country))
    mismatch = factor(answer, "card_country_mismatch")
    assert (mismatch["triggered"], mismatch["reason"]) == (triggered, reason)
    assert mismatch["contribution"] == (15 if triggered else 0)
    assert (mismatch["value"], mismatch["threshold"]) == (issuer, country)
    stored = (await http.get(f"/v1/decisions/{answer['trace_id']}", headers=AUTH)).json()
    assert stored["inputs"]["card_country"] == issuer


async def test_country_mismatch_with_a_card_number_and_a_bad_issuer_country(
    http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    applied = await http.put("/v1/policy", content=ONE_FACTOR_MISMATCH, headers=admin)
    assert applied.status_code == 200, applied.text
    answer = await evaluate(http, transaction(new_card() | {"issuer_country": "FR"}))
    assert (answer["decision"], answer["score"]) == ("review", 40)
    assert answer["reasons"] == ["The card was issued in FR but the transaction is in DE."]
    refused = await http.post(
        EVALUATE, json=transaction(new_card() | {"issuer_country": "fr"}), headers=AUTH
    )
    assert refused.status_code == 422, refused.text
    assert [e["field"] for e in refused.json()["errors"]] == ["card.issuer_country"]


async def test_the_same_body_with_another_issuer_country_is_another_request(
    http: httpx.AsyncClient,
) -> None:
    token = await tokenize(http)
    body = transaction({"token": token, "issuer_country": "US"})
    await evaluate(http, body)
    same = await http.post(EVALUATE, json=body, headers=AUTH)
    assert same.headers.get("Idempotent-Replayed") == "true"
    changed = await http.post(
        EVALUATE, json=body | {"card": {"token": token, "issuer_country": "DE"}}, headers=AUTH
    )
    assert changed.status_code == 422, changed.text


async def test_erasing_a_tenant_deletes_its_risk_policies_and_decisions(
    app_http: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    gateway = InProcessGateway(*app_http)
    http = gateway.http
    doomed, kept = await gateway.tenant(), await gateway.tenant()
    answers: dict[str, list[str]] = {}
    for tenant in (doomed, kept):
        key = bearer((await gateway.key(tenant, Role.ADMIN)).secret)
        applied = await http.put("/v1/policy", content=ONE_FACTOR_MISMATCH, headers=key)
        assert applied.status_code == 200, applied.text
        token = (await http.post("/v1/tokens", json=new_card(), headers=key)).json()["token"]
        answers[tenant.id] = []
        for _ in range(3):
            response = await http.post(EVALUATE, json=transaction({"token": token}), headers=key)
            assert response.status_code == 200, response.text
            answers[tenant.id].append(response.json()["trace_id"])

    state = gateway.state
    await state.tenants.erase(doomed.id, actor="test")

    assert await _count(gateway, "risk_decisions", doomed.id) == 0
    assert await _count(gateway, "risk_policies", doomed.id) == 0
    assert await _count(gateway, "risk_policy_history", doomed.id) == 0
    for trace_id in answers[doomed.id]:
        assert await state.store.decisions.get(doomed.id, trace_id) is None
    assert await state.store.policies.history(doomed.id) == []
    # The other tenant keeps everything.
    assert await _count(gateway, "risk_decisions", kept.id) == 3
    assert await _count(gateway, "risk_policies", kept.id) == 1
    for trace_id in answers[kept.id]:
        assert await state.store.decisions.get(kept.id, trace_id) is not None
    erased = [
        entry
        for entry in await _audit_details(gateway, "tenant.erased")
        if entry.get("risk_decisions_erased") is not None
    ]
    assert erased == [
        {
            "records_erased": erased[0]["records_erased"],
            "data_keys_destroyed": erased[0]["data_keys_destroyed"],
            "tokens_erased": 1,
            "secrets_erased": erased[0]["secrets_erased"],
            "risk_policies_erased": 1,
            "risk_decisions_erased": 3,
        }
    ]


async def _count(gateway: InProcessGateway, table: str, tenant: str) -> int:
    async with gateway.state.store.engine.connect() as connection:
        result = await connection.execute(
            text(f"SELECT count(*) FROM {table} WHERE tenant = :tenant"),  # noqa: S608 - test table names
            {"tenant": tenant},
        )
        count: int = result.scalar_one()
    return count


async def _audit_details(gateway: InProcessGateway, action: str) -> list[dict[str, Any]]:
    records = await gateway.state.store.audit.query(AuditQuery(action=action, limit=100))
    return [dict(record.entry.details) for record in records]


async def test_a_known_card_number_is_tokenized_without_a_write(
    app_http: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, http = app_http
    tokens = InProcessGateway(app, http).state.store.tokens
    writes: list[str] = []
    for name in ("insert", "update_expiry", "delete"):
        original = getattr(tokens, name)

        async def spy(*args: Any, _name: str = name, _original: Any = original) -> Any:
            writes.append(_name)
            return await _original(*args)

        setattr(tokens, name, spy)
    card = new_card()
    first = await evaluate(http, transaction(card))
    assert writes == ["insert"]
    for _ in range(3):
        again = await evaluate(http, transaction(card))
        assert again["card"]["token"] == first["card"]["token"]
    assert writes == ["insert"]


def test_decision_retention_has_a_default_and_a_floor(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("STRONGROOM_RISK_DECISION_RETENTION_DAYS", raising=False)
    assert load_settings(data_dir=tmp_path).risk_decision_retention_days == 400
    monkeypatch.setenv("STRONGROOM_RISK_DECISION_RETENTION_DAYS", "45")
    assert load_settings(data_dir=tmp_path).risk_decision_retention_days == 45
    monkeypatch.setenv("STRONGROOM_RISK_DECISION_RETENTION_DAYS", "7")
    with pytest.raises(ConfigurationError, match="STRONGROOM_RISK_DECISION_RETENTION_DAYS"):
        load_settings(data_dir=tmp_path)
