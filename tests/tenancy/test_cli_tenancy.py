"""``strongroom init``, ``tenants``, ``keys`` and ``usage`` on a data dir, with real processes.

1. ``init`` on a fresh install prints exactly one platform admin key and exits 0;
   run again it refuses (non-zero, ``Error: …`` on stderr) and changes nothing,
   and the first key keeps working against ``serve``.
2. ``tenants create|list|show|suspend|resume`` and ``keys create|list|rotate|revoke``
   work on the data dir, with the server down or running; changes made while it
   runs bite within ``STRONGROOM_KEY_CACHE_SECONDS``.
3. ``usage --tenant T --json`` reports what the gateway counted.
4. ``STRONGROOM_API_KEYS`` keys act as operator keys of tenant ``default``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from tenancy_support import KEY_PATTERN, TENANT_ID_PATTERN

from support import KEY, KEY_IN_TEXT, OTHER_KEY, GatewayProcess, bearer, card_free_event, key_id_of
from support_cli import cli, cli_ok, json_lines

pytestmark = pytest.mark.slow

CACHE_SECONDS = 0.5
#: The key cache window plus a margin for a loaded machine.
SETTLE_SECONDS = CACHE_SECONDS + 0.3
StartServe = Callable[..., GatewayProcess]


def only_key(stdout: str) -> str:
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    assert len(lines) == 1, stdout
    assert KEY_PATTERN.match(lines[0]), stdout
    return lines[0]


def ingest(client: httpx.Client, secret: str) -> str:
    event = card_free_event()
    response = client.post("/v1/events", json=event, headers=bearer(secret))
    assert response.status_code == 202, response.text
    event_id: str = event["event_id"]
    return event_id


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    return body


def test_init_prints_one_key_once_then_refuses(tmp_path: Path, start_serve: StartServe) -> None:
    data_dir = tmp_path / "data"
    first = cli("init", "--data-dir", str(data_dir))
    assert first.returncode == 0, first.stderr
    platform = only_key(first.stdout)
    assert len(KEY_IN_TEXT.findall(first.stdout + first.stderr)) == 1

    second = cli("init", "--data-dir", str(data_dir))
    assert second.returncode != 0
    assert second.stderr.startswith("Error:"), second.stderr
    assert "Traceback" not in second.stderr
    assert KEY_IN_TEXT.search(second.stdout + second.stderr) is None
    # Nothing changed: still the one key, and it is the first run's.
    listed = cli_ok("keys", "list", "--tenant", "default", "--json", "--data-dir", str(data_dir))
    (only,) = json_lines(listed)
    assert only["id"] == key_id_of(platform)
    assert "tenants:admin" in only["scopes"]
    assert only["role"] == "admin"
    assert only["revoked_at"] is None

    gateway = start_serve(data_dir)
    assert KEY_IN_TEXT.search(gateway.stdout()) is None, "serve printed a second key"
    with gateway.client() as client:
        tenants = client.get("/v1/admin/tenants", headers=bearer(platform))
        assert tenants.status_code == 200, tenants.text
        assert [t["name"] for t in tenants.json()["data"]] == ["default"]
        minted = client.post(
            "/v1/keys", json={"name": "ops", "role": "operator"}, headers=bearer(platform)
        )
        assert minted.status_code == 201, minted.text


def test_tenants_and_keys_from_the_cli_with_the_server_down_and_up(
    tmp_path: Path, start_serve: StartServe
) -> None:
    data_dir = str(tmp_path / "data")
    dd = ("--data-dir", data_dir)

    tenant_id = cli_ok("tenants", "create", "acme", *dd).strip()
    assert TENANT_ID_PATTERN.match(tenant_id), tenant_id
    listed = json_lines(cli_ok("tenants", "list", "--json", *dd))
    assert [(t["id"], t["name"], t["status"]) for t in listed] == [(tenant_id, "acme", "active")]
    shown = json.loads(cli_ok("tenants", "show", "acme", *dd))
    assert shown["id"] == tenant_id

    created = cli_ok(
        "keys", "create", "--tenant", "acme", "--role", "operator",
        "--scopes", "events:write,streams:read", "--name", "ingest", *dd,
    )  # fmt: skip
    writer = only_key(created)
    spare = only_key(cli_ok("keys", "create", "--tenant", tenant_id, "--role", "viewer", *dd))

    keys_text = cli_ok("keys", "list", "--tenant", "acme", "--json", *dd)
    assert KEY_IN_TEXT.search(keys_text) is None
    assert "hash" not in keys_text
    views = {view["id"]: view for view in json_lines(keys_text)}
    assert set(views) == {key_id_of(writer), key_id_of(spare)}
    writer_view = views[key_id_of(writer)]
    assert writer_view["tenant"] == tenant_id
    assert writer_view["role"] == "operator"
    assert writer_view["name"] == "ingest"
    assert sorted(writer_view["scopes"]) == ["events:write", "streams:read"]
    assert "key" not in writer_view

    gateway = start_serve(Path(data_dir), {"STRONGROOM_KEY_CACHE_SECONDS": str(CACHE_SECONDS)})
    with gateway.client() as client:
        event_ids = [ingest(client, writer) for _ in range(2)]
        stream = client.get("/v1/streams/payments.tokenized", headers=bearer(writer))
        assert stream.status_code == 200, stream.text
        assert [r["record"]["event_id"] for r in stream.json()["data"]] == event_ids
        denied = problem(client.get("/v1/keys", headers=bearer(writer)), 403)
        assert "keys:manage" in denied["detail"]
        assert client.get("/v1/usage", headers=bearer(spare)).status_code == 200

        # Revoke while the server runs: refused once the key cache window has passed.
        assert cli_ok("keys", "revoke", key_id_of(spare), "--tenant", "acme", *dd)
        time.sleep(SETTLE_SECONDS)
        problem(client.get("/v1/usage", headers=bearer(spare)), 401)

        # Rotate with no grace: a new key that works now, the old one refused.
        rotated = only_key(
            cli_ok("keys", "rotate", key_id_of(writer), "--tenant", "acme",
                   "--grace-seconds", "0", *dd)
        )  # fmt: skip
        assert rotated != writer
        event_ids.append(ingest(client, rotated))
        time.sleep(SETTLE_SECONDS)
        problem(client.post("/v1/events", json=card_free_event(), headers=bearer(writer)), 401)

        # Suspend and resume: 403 tenant_suspended, then working again.
        assert "suspended" in cli_ok("tenants", "suspend", "acme", *dd)
        time.sleep(SETTLE_SECONDS)
        suspended = problem(
            client.post("/v1/events", json=card_free_event(), headers=bearer(rotated)), 403
        )
        assert suspended["code"] == "tenant_suspended"
        assert "active" in cli_ok("tenants", "resume", "acme", *dd)
        time.sleep(SETTLE_SECONDS)
        event_ids.append(ingest(client, rotated))

    gateway.stop()  # a graceful stop flushes the usage counters
    rows = json_lines(cli_ok("usage", "--tenant", "acme", "--json", *dd))
    ingested = [row for row in rows if row["operation"] == "events_ingested"]
    assert sum(row["count"] for row in ingested) == len(event_ids) == 4
    assert all(row["bytes"] > 0 for row in ingested)

    after = {
        v["id"]: v for v in json_lines(cli_ok("keys", "list", "--tenant", "acme", "--json", *dd))
    }
    assert after[key_id_of(spare)]["revoked_at"] is not None
    assert after[key_id_of(writer)]["replaced_by"] == key_id_of(rotated)
    assert after[key_id_of(rotated)]["last_used_at"] is not None


@pytest.fixture(scope="module")
def acme_data_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A data dir holding tenant ``acme``, shared by the error cases (they change nothing)."""
    data_dir = str(tmp_path_factory.mktemp("cli-errors") / "data")
    cli_ok("tenants", "create", "acme", "--data-dir", data_dir)
    return data_dir


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        pytest.param(("keys", "create", "--tenant", "acme", "--role", "operator",
                      "--scopes", "events:wrote"), 2, "unknown scope", id="unknown-scope"),
        pytest.param(("keys", "create", "--tenant", "nobody", "--role", "viewer"), 1,
                     "no such tenant", id="unknown-tenant"),
        pytest.param(("keys", "revoke", "key_000000000000", "--tenant", "acme"), 1,
                     "no such key", id="unknown-key"),
        pytest.param(("tenants", "create", "acme"), 1, "already exists", id="duplicate-tenant"),
        pytest.param(("tenants", "create", "bad/name"), 1, "tenant name", id="invalid-name"),
    ],
)  # fmt: skip
def test_cli_errors_are_one_line_without_traceback(
    acme_data_dir: str, args: tuple[str, ...], code: int, says: str
) -> None:
    result = cli(*args, "--data-dir", acme_data_dir)
    assert result.returncode == code, result.stderr
    assert result.stderr.startswith("Error:"), result.stderr
    assert says in result.stderr.lower(), result.stderr
    assert "Traceback" not in result.stderr
    assert KEY_IN_TEXT.search(result.stdout) is None


def test_configured_keys_are_operator_keys_of_the_default_tenant(
    tmp_path: Path, start_serve: StartServe
) -> None:
    data_dir = tmp_path / "data"
    gateway = start_serve(
        data_dir,
        {"STRONGROOM_REVOKED_KEYS": OTHER_KEY},
        configured_keys=f"{KEY},{OTHER_KEY}",
    )
    assert KEY_IN_TEXT.search(gateway.stdout()) is None, "configured keys suppress bootstrap"
    with gateway.client() as client:
        ingest(client, KEY)
        usage = client.get("/v1/usage", headers=bearer(KEY))
        assert usage.status_code == 200, usage.text
        assert usage.json()["tenant"] == "default"
        denied = problem(
            client.post("/v1/keys", json={"name": "x", "role": "viewer"}, headers=bearer(KEY)),
            403,
        )
        assert "keys:manage" in denied["detail"]
        admin = problem(client.get("/v1/admin/tenants", headers=bearer(KEY)), 403)
        assert "tenants:admin" in admin["detail"]
        revoked = problem(client.get("/v1/usage", headers=bearer(OTHER_KEY)), 401)
        assert revoked["code"] == "unauthorized"

    gateway.stop()
    rows = json_lines(cli_ok("usage", "--tenant", "default", "--json", "--data-dir", str(data_dir)))
    assert sum(r["count"] for r in rows if r["operation"] == "events_ingested") == 1
