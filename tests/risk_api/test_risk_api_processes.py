"""Real processes: the ``policy`` commands, a policy applied from the CLI reaching a
running gateway, and velocity shared through Redis by two gateways."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from risk_api_support import EVALUATE, factor, new_card, transaction

from strongroom.domain.risk import DEFAULT_POLICY
from support import AUTH, UNTHROTTLED_ENV, GatewayProcess
from support_cli import cli, cli_ok

pytestmark = pytest.mark.slow

CANDIDATE = """\
review_threshold: 10
decline_threshold: 60
factors:
  - name: card_velocity
    kind: velocity_count
    subject: card
    window_seconds: 600
    threshold: 1
    weight: 70
"""


def test_validate_explains_each_error_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        "review_threshold: 50\ndecline_threshold: 90\nfactors:\n"
        "  - name: v\n    kind: velocity_count\n    subject: planet\n"
        "    window_seconds: 60\n    threshold: 3\n    weight: '5'\n"
    )
    result = cli("policy", "validate", str(path))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"Error: {path}:6:14: factors[0].subject must be 'card', 'merchant', 'device' or 'ip'"
        " (got 'planet').",
        f"Error: {path}:9:13: factors[0].weight must be a valid integer (got '5').",
    ]
    good = tmp_path / "good.yaml"
    good.write_text(CANDIDATE)
    assert "valid, version" in cli_ok("policy", "validate", str(good))


def test_policy_test_prints_the_decisions_that_would_change(tmp_path: Path) -> None:
    policy = tmp_path / "candidate.yaml"
    policy.write_text(CANDIDATE)
    samples = tmp_path / "samples.jsonl"
    token = "tok_" + "a" * 24
    rows = [transaction({"token": token}, transaction_id=f"s{n}") for n in range(3)]
    samples.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    out = cli_ok("policy", "test", str(policy), "--transactions", str(samples), "--json")
    body = json.loads(out)
    assert body["samples"] == 3
    assert body["active_version"] == DEFAULT_POLICY.version
    # The first use is within the limit of 1; the second and third are above it.
    assert [(d["line"], d["candidate"]["decision"]) for d in body["changed"]] == [
        (2, "decline"),
        (3, "decline"),
    ]
    text = cli_ok("policy", "test", str(policy), "--transactions", str(samples))
    assert "sample 2 s1: approve" in text
    assert "2 of 3 decisions would change" in text
    # A card number in a sample is refused without echoing it.
    number_rows = tmp_path / "numbers.jsonl"
    number = new_card()["number"]
    number_rows.write_text(json.dumps(transaction(new_card(number))) + "\n")
    refused = cli("policy", "test", str(policy), "--transactions", str(number_rows))
    assert refused.returncode == 1
    assert refused.stderr.startswith("Error: ")
    assert number not in refused.stderr + refused.stdout


def test_policy_apply_from_the_cli_reaches_a_running_gateway(
    tmp_path: Path, start_gateway: Callable[..., GatewayProcess]
) -> None:
    gateway = start_gateway(env=UNTHROTTLED_ENV)
    policy = tmp_path / "candidate.yaml"
    policy.write_text(CANDIDATE)
    with gateway.client(headers=AUTH) as http:
        before = http.post(EVALUATE, json=transaction())
        assert before.status_code == 200, before.text
        assert before.json()["policy_version"] == DEFAULT_POLICY.version
        out = cli_ok(
            "policy", "apply", str(policy), "--tenant", "default",
            "--data-dir", str(gateway.data_dir), "--json",
        )  # fmt: skip
        applied = json.loads(out)
        assert applied["changed"] is True
        deadline = time.monotonic() + 10
        version = None
        while time.monotonic() < deadline:
            answer = http.post(EVALUATE, json=transaction())
            assert answer.status_code == 200, answer.text
            version = answer.json()["policy_version"]
            if version == applied["version"]:
                break
            time.sleep(0.2)
        assert version == applied["version"]


def test_velocity_is_shared_through_redis_by_two_gateways(
    tmp_path: Path, start_gateway: Callable[..., GatewayProcess], redis_prefix: str
) -> None:
    env = {
        **UNTHROTTLED_ENV,
        "STRONGROOM_REDIS_URL": "redis://127.0.0.1:6379/0",
        "STRONGROOM_REDIS_VELOCITY_PREFIX": redis_prefix + "velocity:",
        "STRONGROOM_REDIS_SEEN_PREFIX": redis_prefix + "seen:",
        "STRONGROOM_REDIS_RATELIMIT_PREFIX": redis_prefix + "ratelimit:",
    }
    first = start_gateway(tmp_path / "one", env=env)
    second = start_gateway(tmp_path / "two", env=env)
    device = "dev_" + uuid.uuid4().hex[:12]
    answers: list[dict[str, Any]] = []
    with first.client(headers=AUTH) as one, second.client(headers=AUTH) as two:
        for n in range(24):
            http: httpx.Client = one if n % 2 == 0 else two
            response = http.post(EVALUATE, json=transaction(device_id=device))
            assert response.status_code == 200, response.text
            answers.append(response.json())
    # Each gateway has its own store (and vault), but the device's counter is in Redis.
    assert [factor(a, "device_velocity")["value"] for a in answers] == list(range(1, 25))
    assert factor(answers[-1], "device_velocity")["contribution"] > 0
    assert factor(answers[19], "device_velocity")["contribution"] == 0


def test_an_unreachable_redis_is_503_not_500(
    tmp_path: Path, start_gateway: Callable[..., GatewayProcess]
) -> None:
    env = {**UNTHROTTLED_ENV, "STRONGROOM_REDIS_URL": "redis://127.0.0.1:1/0"}
    gateway = start_gateway(env=env)
    with gateway.client(headers=AUTH) as http:
        response = http.post(EVALUATE, json=transaction())
    assert response.status_code == 503, response.text
