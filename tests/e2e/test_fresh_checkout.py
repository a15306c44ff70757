"""The quickstart from a clean clone: committed files alone build and serve.

``make serve`` first builds ``.venv/.stamp-runtime`` (a venv with the package
installed), then runs ``strongroom serve``. This test does the same in a fresh
clone of the current HEAD, so a module that exists only in someone's work tree,
or a dependency missing from pyproject.toml, fails here.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from e2e_helpers import TOPIC, card_free_event

from support import JSON_HEADERS, GatewayProcess
from support_cli import clean_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

REPO_ROOT = Path(__file__).parents[2]


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    # The clone must not see this checkout's venv or package through the environment.
    env = clean_env(unset=["VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PIP_REQUIRE_VIRTUALENV"])
    return subprocess.run(
        argv, capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


def test_fresh_clone_builds_and_serves(tmp_path: Path) -> None:
    for tool in ("git", "make"):
        if shutil.which(tool) is None:
            pytest.skip(f"`{tool}` is not installed; the quickstart needs it")
    clone = tmp_path / "clone"
    cloned = _run(["git", "clone", "--quiet", "--no-hardlinks", str(REPO_ROOT), str(clone)], 120)
    assert cloned.returncode == 0, cloned.stderr

    built = _run(["make", "-C", str(clone), ".venv/.stamp-runtime"], 540)
    assert built.returncode == 0, f"make failed:\n{built.stdout[-3000:]}\n{built.stderr[-3000:]}"
    script = clone / ".venv" / "bin" / "strongroom"
    assert script.exists()

    gateway = GatewayProcess(tmp_path / "data", command=[str(script)])
    gateway.env = clean_env(
        {"STRONGROOM_API_KEYS": gateway.env["STRONGROOM_API_KEYS"]},
        unset=["VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"],
    )
    try:
        gateway.start(timeout=60)
        with gateway.client() as client:
            health = client.get("/health")
            assert health.status_code == 200
            assert health.json() == {"status": "ok"}
            body = card_free_event()
            ingested = client.post("/v1/events", json=body, headers=JSON_HEADERS)
            assert ingested.status_code == 202, ingested.text
            assert ingested.json() == {"accepted": [body["event_id"]], "duplicates": []}
            page = client.get(f"/v1/streams/{TOPIC}", headers=JSON_HEADERS).json()
            assert [r["record"]["event_id"] for r in page["data"]] == [body["event_id"]]
    finally:
        gateway.ensure_stopped()
