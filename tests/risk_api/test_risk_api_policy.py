"""``/v1/policy``: read, apply (versioned, audited), refuse with lines, and shadow runs."""

from __future__ import annotations

import json
from typing import Any

import httpx
import yaml
from risk_api_support import evaluate, tokenize, transaction

from strongroom.domain.risk import DEFAULT_POLICY, DEFAULT_POLICY_TEXT

STRICT = """\
# Review from 10: every first-seen card gets a second look.
review_threshold: 10
decline_threshold: 60
factors:
  - name: first_seen_card
    kind: first_seen_card
    weight: 20
  - name: card_velocity
    kind: velocity_count
    subject: card
    window_seconds: 600
    threshold: 2
    weight: 70
"""


async def put_policy(
    http: httpx.AsyncClient,
    admin: dict[str, str],
    text: str,
    content_type: str = "application/yaml",
) -> httpx.Response:
    return await http.put(
        "/v1/policy", content=text.encode(), headers={**admin, "Content-Type": content_type}
    )


async def test_the_default_policy_is_active_until_one_is_applied(
    http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await http.get("/v1/policy", headers=admin)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["version"] == DEFAULT_POLICY.version
    assert body["default"] is True
    assert body["source"] == DEFAULT_POLICY_TEXT
    assert "card_velocity" in {f["name"] for f in body["policy"]["factors"]}
    assert body["history"] == []


async def test_apply_versions_audits_and_takes_effect(
    http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    applied = await put_policy(http, admin, STRICT)
    assert applied.status_code == 200, applied.text
    version = applied.json()["version"]
    assert applied.json()["changed"] is True
    assert applied.json()["previous_version"] == DEFAULT_POLICY.version

    # The same meaning as JSON is the same version: nothing changes.
    same = await put_policy(http, admin, json.dumps(yaml.safe_load(STRICT)), "application/json")
    assert same.status_code == 200, same.text
    assert same.json()["version"] == version
    assert same.json()["changed"] is False

    body = (await http.get("/v1/policy", headers=admin)).json()
    assert body["version"] == version
    assert body["default"] is False
    assert [h["version"] for h in body["history"]] == [version, version]

    answer = await evaluate(http, transaction())
    assert answer["policy_version"] == version
    assert answer["decision"] == "review"

    trail = await http.get("/v1/audit", params={"limit": 1000}, headers=admin)
    assert trail.status_code == 200, trail.text
    records = [r for r in trail.json()["data"] if r["action"] == "risk.policy_applied"]
    assert len(records) == 2
    assert records[0]["resource"] == f"policy:{version}"


async def test_an_invalid_policy_is_422_naming_its_line(
    http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    bad = STRICT.replace("threshold: 2", "threshold: two")
    response = await put_policy(http, admin, bad)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["type"].endswith("policy_invalid")
    errors = problem["errors"]
    assert [e["field"] for e in errors] == ["factors[1].threshold"]
    assert errors[0]["message"].startswith("line 12, column 16:")
    # Nothing changed.
    assert (await http.get("/v1/policy", headers=admin)).json()["default"] is True


async def test_bad_policy_bodies_are_4xx(http: httpx.AsyncClient, admin: dict[str, str]) -> None:
    for body in (b"", b"\xff\xfe", b"[1, 2", b"review_threshold: 50", b"- a\n- b"):
        response = await http.put("/v1/policy", content=body, headers=admin)
        assert response.status_code == 422, (body, response.text)


async def shadow(
    http: httpx.AsyncClient, admin: dict[str, str], payload: dict[str, Any]
) -> httpx.Response:
    return await http.post("/v1/policy/test", json=payload, headers=admin)


async def test_shadow_lists_the_decisions_that_would_change(
    http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    token = await tokenize(http)
    samples = [transaction({"token": token}) for _ in range(3)]
    response = await shadow(
        http, admin, {"policy": STRICT, "transactions": samples, "isolated": True}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["samples"] == 3
    assert body["active_version"] == DEFAULT_POLICY.version
    # Isolated: the first sample is a first-seen card (20: review), the third is the
    # card's third use (velocity above 2: decline); the default approves all three.
    changed = {d["line"]: d for d in body["changed"]}
    assert changed[1]["active"]["decision"] == "approve"
    assert changed[1]["candidate"]["decision"] == "review"
    assert changed[3]["candidate"]["decision"] == "decline"
    # Nothing was recorded: a live evaluation still sees a first-seen card.
    answer = await evaluate(http, transaction({"token": token}))
    assert [f["value"] for f in answer["factors"] if f["name"] == "card_velocity"] == [1]


async def test_shadow_refuses_bad_candidates_and_samples(
    http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    bad = await shadow(http, admin, {"policy": "review_threshold: x", "transactions": []})
    assert bad.status_code == 422
    assert bad.json()["type"].endswith("policy_invalid")
    sample = await shadow(http, admin, {"policy": STRICT, "transactions": [{"amount": 1}]})
    assert sample.status_code == 422
    assert sample.json()["errors"][0]["field"].startswith("line 1:")
    with_number = await shadow(
        http,
        admin,
        {
            "policy": STRICT,
            "transactions": [transaction()],
        },
    )
    assert with_number.status_code == 422
    assert with_number.json()["type"].endswith("pan_detected")
