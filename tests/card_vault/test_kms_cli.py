"""``strongroom kms`` and ``stream tail --decrypt`` as real processes on a data dir.

1. ``kms status --json`` reports the backend, KEK versions and data keys per version.
2. ``kms rotate`` adds a KEK version (data keys are then behind), ``kms rewrap`` brings
   every data key to it (idempotently), ``kms rewrap --reencrypt`` re-seals the vault
   under fresh data keys; every token still detokenizes and the signing secret still
   verifies. ``kms min-version N`` refuses a version beyond the latest with ``Error:``.
3. All of this works with the gateway stopped and while it serves (it sees the new KEK
   version at once), and against OpenBao Transit as well as the local keyring.
4. ``stream tail --topic payments.raw --decrypt --reason TEXT`` prints the original
   events, card numbers included, even after re-encryption, and is audited; without a
   reason (or on another topic) it exits 2.

Each CLI run costs about a second of start-up, so each test is one operator's runbook
rather than many small tests.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from card_vault_support import CARDS, card

from strongroom.crypto.transaction_signing import MoneyFields, sign_transaction
from support import UNTHROTTLED_ENV, GatewayProcess, bearer, card_free_event, gateway_starter
from support_cli import cli, json_lines
from support_openbao import OpenBaoServer, new_key_name

pytestmark = pytest.mark.slow


@dataclass
class Install:
    """A data dir initialised by ``strongroom init``, its platform admin key, and the
    environment every process on it gets (``STRONGROOM_*`` for the key manager)."""

    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    admin: str = ""

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return cli(*args, "--data-dir", str(self.data_dir), env=self.env)

    def ok(self, *args: str) -> str:
        result = self.run(*args)
        assert result.returncode == 0, f"{args}: exit {result.returncode}\n{result.stderr}"
        assert "Traceback" not in result.stderr, result.stderr
        return result.stdout

    def status(self) -> dict[str, Any]:
        (view,) = json_lines(self.ok("kms", "status", "--json"))
        return view

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.admin)


StartGateway = Callable[[Install], GatewayProcess]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[StartGateway]:
    """``start(install)``: a gateway on the install's data dir and environment."""
    with gateway_starter(tmp_path / "data") as starter:

        def start(install: Install) -> GatewayProcess:
            return starter(install.data_dir, {**UNTHROTTLED_ENV, **install.env})

        yield start


def initialise(data_dir: Path, env: dict[str, str] | None = None) -> Install:
    install = Install(data_dir, env or {})
    (line,) = [line for line in install.ok("init").splitlines() if line.strip()]
    install.admin = line.strip()
    return install


def tokenize(client: httpx.Client, install: Install, numbers: list[str]) -> dict[str, str]:
    """Token → number for every card, tokenized over HTTP."""
    tokens = {}
    for number in numbers:
        response = client.post("/v1/tokens", json=card(number), headers=install.headers)
        assert response.status_code in (200, 201), response.text
        tokens[response.json()["token"]] = number
    return tokens


def assert_detokenize(client: httpx.Client, install: Install, tokens: dict[str, str]) -> None:
    for token, number in tokens.items():
        response = client.post(
            "/v1/tokens/detokenize", json={"token": token}, headers=install.headers
        )
        assert response.status_code == 200, response.text
        assert response.json()["number"] == number


def signed_event(secret: str, number: str) -> dict[str, Any]:
    event = card_free_event(card=card(number), amount=50_000, currency="EUR")
    fields = MoneyFields(event["event_id"], number, 50_000, "EUR", event["merchant_id_hash"])
    return {**event, "signature": sign_transaction(secret, fields)}


def audit_records(client: httpx.Client, install: Install) -> list[dict[str, Any]]:
    response = client.get("/v1/audit", params={"limit": 1000}, headers=install.headers)
    assert response.status_code == 200, response.text
    records: list[dict[str, Any]] = response.json()["data"]
    return records


def test_rotate_rewrap_reencrypt_and_decrypt_with_the_gateway_stopped(
    tmp_path: Path, start: StartGateway
) -> None:
    install = initialise(tmp_path / "data")
    numbers = [CARDS["visa"], CARDS["amex"], CARDS["unionpay"]]
    gateway = start(install)
    with gateway.client() as client:
        tokens = tokenize(client, install, numbers)
        created = client.post("/v1/settings/signing-secret", headers=install.headers)
        secret = created.json()["signing_secret"]
        events = [
            card_free_event(card=card(CARDS["jcb"])),
            signed_event(secret, CARDS["visa"]),
            card_free_event(),
        ]
        sent = client.post("/v1/events", json={"events": events}, headers=install.headers)
        assert sent.status_code == 202, sent.text
    gateway.stop()

    before = install.status()
    (rotated,) = json_lines(install.ok("kms", "rotate", "--json"))
    rotated_status = install.status()
    (rewrapped,) = json_lines(install.ok("kms", "rewrap", "--json"))
    (again,) = json_lines(install.ok("kms", "rewrap", "--json"))
    (reencrypted,) = json_lines(install.ok("kms", "rewrap", "--reencrypt", "--json"))
    minimum = install.ok("kms", "min-version", "2")
    beyond = install.run("kms", "min-version", "3")
    without_reason = install.run("stream", "tail", "--topic", "payments.raw", "--decrypt")
    wrong_topic = install.run(
        "stream", "tail", "--topic", "payments.tokenized", "--decrypt", "--reason", "x"
    )
    decrypted = install.ok(
        "stream", "tail", "--topic", "payments.raw", "--decrypt",
        "--reason", "incident 42", "--json",
    )  # fmt: skip

    assert before == {
        "backend": "local",
        "latest_version": 1,
        "min_decryption_version": 1,
        "versions": [1],
        "data_keys_by_version": {"1": 1},
        "data_keys_behind": 0,
    }
    assert rotated == {"latest_version": 2}
    assert rotated_status["versions"] == [1, 2]
    assert rotated_status["latest_version"] == 2
    assert rotated_status["data_keys_behind"] == 1
    assert rewrapped == {"rewrapped": 1, "resealed": 0}
    assert again == {"rewrapped": 0, "resealed": 0}, "a second rewrap found work"
    # Four card numbers (three tokenized, one more from an event) and the signing
    # secret, each re-sealed under a fresh data key.
    assert reencrypted == {"rewrapped": 0, "resealed": 5}
    # The fresh data key and the retired one, both under v2: nothing is behind.
    assert "minimum decryption version: 2" in minimum
    assert "data keys wrapped under v2: 2" in minimum
    assert "behind" not in minimum
    assert beyond.returncode not in (0, 2), beyond
    assert beyond.stderr.startswith("Error:"), beyond.stderr
    assert "Traceback" not in beyond.stderr
    for refused in (without_reason, wrong_topic):
        assert refused.returncode == 2, refused
        assert refused.stderr.startswith("Error:"), refused.stderr
        assert refused.stdout == ""
    # The originals on payments.raw were sealed under the now retired data key; it still
    # opens, and prints exactly what was sent, card number included.
    lines = json_lines(decrypted)
    assert [line["record"] for line in lines] == events[:2]
    assert lines[0]["record"]["card"]["number"] == CARDS["jcb"]
    assert {line["topic"] for line in lines} == {"payments.raw"}

    gateway = start(install)
    with gateway.client() as client:
        assert_detokenize(client, install, tokens)
        resigned = client.post(
            "/v1/events", json=signed_event(secret, CARDS["amex"]), headers=install.headers
        )
        assert resigned.status_code == 202, "the re-sealed signing secret no longer verifies"
        assert tokenize(client, install, [CARDS["discover"]])
        audited = audit_records(client, install)
        raw = client.get("/v1/streams/payments.raw", headers=install.headers).json()["data"]
    for action in (
        "kms.rotated",
        "kms.rewrapped",
        "kms.reencrypted",
        "kms.min_decryption_version_set",
        "stream.decrypted",
    ):
        assert action in {record["action"] for record in audited}, action
    (decryption,) = [r for r in audited if r["action"] == "stream.decrypted"]
    assert decryption["details"]["reason"] == "incident 42"
    assert decryption["resource"] == "payments.raw"
    for number in [*numbers, CARDS["jcb"]]:
        assert number not in json.dumps(audited)
        assert number not in json.dumps(raw)


def test_rotate_and_rewrap_while_the_gateway_serves(tmp_path: Path, start: StartGateway) -> None:
    install = initialise(tmp_path / "data")
    gateway = start(install)
    with gateway.client() as client:
        tokens = tokenize(client, install, [CARDS["visa"], CARDS["maestro"]])

        (rotated,) = json_lines(install.ok("kms", "rotate", "--json"))
        tenant = install.ok("tenants", "create", "late-tenant").strip()
        secret = install.ok("keys", "create", "--tenant", tenant, "--role", "admin").strip()
        late = Install(install.data_dir, install.env, secret)
        # The new tenant's first data key is made by the running gateway: under v2.
        late_tokens = tokenize(client, late, [CARDS["visa"]])
        mixed = install.ok("kms", "status")
        (rewrapped,) = json_lines(install.ok("kms", "rewrap", "--json"))
        minimum = install.ok("kms", "min-version", "2")

        assert_detokenize(client, install, tokens)
        assert_detokenize(client, late, late_tokens)
        tokens.update(tokenize(client, install, [CARDS["diners"]]))
        assert_detokenize(client, install, tokens)
        assert set(late_tokens).isdisjoint(tokens)

    assert rotated == {"latest_version": 2}
    assert "KEK versions: 1, 2 (latest 2)" in mixed
    assert "data keys wrapped under v1: 1" in mixed
    assert "data keys wrapped under v2: 1" in mixed
    assert "1 data keys behind the latest version" in mixed
    assert rewrapped == {"rewrapped": 1, "resealed": 0}
    assert "minimum decryption version: 2" in minimum
    assert "data keys wrapped under v2: 2" in minimum
    assert "v1" not in minimum
    assert "behind" not in minimum


def raw_data_keys(client: httpx.Client, install: Install) -> list[str]:
    """The data key id in the header (``sr1:v<N>:<DEK id>:...``) of each raw record."""
    response = client.get("/v1/streams/payments.raw", headers=install.headers)
    assert response.status_code == 200, response.text
    return [r["record"]["sealed"].split(":")[2] for r in response.json()["data"]]


def test_after_reencrypt_a_serving_gateway_seals_under_the_fresh_data_key(
    tmp_path: Path, start: StartGateway
) -> None:
    # The gateway re-reads its cached data key's row this often (default 5 s).
    install = initialise(tmp_path / "data", {"STRONGROOM_DATA_KEY_RECHECK_SECONDS": "0.2"})
    gateway = start(install)
    with gateway.client() as client:
        first = card_free_event(card=card(CARDS["visa"]))
        assert client.post("/v1/events", json=first, headers=install.headers).status_code == 202

        (reencrypted,) = json_lines(install.ok("kms", "rewrap", "--reencrypt", "--json"))
        time.sleep(0.5)
        second = card_free_event(card=card(CARDS["amex"]))
        assert client.post("/v1/events", json=second, headers=install.headers).status_code == 202
        before, after = raw_data_keys(client, install)

    assert reencrypted == {"rewrapped": 0, "resealed": 1}
    assert after != before, "a new card was sealed under the data key just retired"


def test_the_kms_commands_work_against_openbao_transit(
    tmp_path: Path, start: StartGateway, card_vault_openbao: OpenBaoServer
) -> None:
    server = card_vault_openbao
    env = {
        "STRONGROOM_KMS_URL": server.kms_url(new_key_name()),
        "STRONGROOM_VAULT_TOKEN": server.token,
        # Generous: a loaded machine may take more than the default two seconds.
        "STRONGROOM_KMS_TIMEOUT_SECONDS": "10",
    }
    install = initialise(tmp_path / "data", env)
    gateway = start(install)
    with gateway.client() as client:
        tokens = tokenize(client, install, [CARDS["visa"], CARDS["amex"]])
    gateway.stop()

    first = install.status()
    rotate_output = install.ok("kms", "rotate", "--json")
    (rotated,) = json_lines(rotate_output)
    behind = install.status()
    (rewrapped,) = json_lines(install.ok("kms", "rewrap", "--json"))
    (reencrypted,) = json_lines(install.ok("kms", "rewrap", "--reencrypt", "--json"))
    install.ok("kms", "min-version", "2")
    beyond = install.run("kms", "min-version", "3")
    settled = install.status()

    assert first["backend"] == "vault"
    assert (first["latest_version"], first["versions"]) == (1, [1])
    assert first["data_keys_by_version"] == {"1": 1}
    assert rotated == {"latest_version": 2}
    assert (behind["versions"], behind["data_keys_behind"]) == ([1, 2], 1)
    assert rewrapped == {"rewrapped": 1, "resealed": 0}
    assert reencrypted == {"rewrapped": 0, "resealed": 2}
    assert settled["latest_version"] == 2
    assert settled["min_decryption_version"] == 2
    assert settled["data_keys_by_version"] == {"2": 2}
    assert settled["data_keys_behind"] == 0
    assert beyond.returncode not in (0, 2), beyond
    assert beyond.stderr.startswith("Error:"), beyond.stderr
    assert "Traceback" not in beyond.stderr
    for output in (json.dumps([first, behind, settled]), rotate_output, beyond.stderr):
        assert server.token not in output

    gateway = start(install)
    with gateway.client() as client:
        assert_detokenize(client, install, tokens)
    assert server.token not in gateway.output()
