"""First start without keys, ``config show``, configuration errors and ``--help``."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e_helpers import TOPIC, card_free_event, cli, strongroom_command

from strongroom.crypto.keyed_hash import keyed_hash
from support import KEY, OTHER_KEY, GatewayProcess, stored_contents
from support_cli import clean_env

pytestmark = pytest.mark.slow

_KEY_LINE = re.compile(r"^\s+(\S{16,})\s*$", re.MULTILINE)


def _files(directory: Path) -> list[Path]:
    return sorted(path for path in directory.rglob("*") if path.is_file())


def _works(gateway: GatewayProcess, key: str) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    with gateway.client(headers=headers) as client:
        assert client.get(f"/v1/streams/{TOPIC}").status_code == 200
        response = client.post("/v1/events", json=card_free_event())
        assert response.status_code == 202, response.text


def test_bootstrap_key_is_printed_once_and_only_its_keyed_hash_is_stored(
    start_gateway: Callable[..., GatewayProcess],
) -> None:
    first = start_gateway(unset=["STRONGROOM_API_KEYS"])
    printed = _KEY_LINE.findall(first.stdout())
    assert len(printed) == 1, f"want exactly one key on stdout, got:\n{first.stdout()}"
    key = printed[0]
    _works(first, key)
    assert key not in first.stderr(), "the bootstrap key reached the log"

    data_dir = first.data_dir
    stored = stored_contents(data_dir)
    for name, content in stored.items():
        assert key.encode() not in content, f"{name} holds the clear key"
    hashed = keyed_hash(stored["pepper"], key)
    holders = [
        name
        for name, content in stored.items()
        if hashed in content or hashed.hex().encode() in content
    ]
    assert holders, "the store does not hold the key's keyed hash"
    # The store itself lives in a 0700 directory; the secrets beside it are 0600.
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((data_dir / "pepper").stat().st_mode) == 0o600
    assert first.stop() in (0, -15)

    second = start_gateway(data_dir=data_dir, unset=["STRONGROOM_API_KEYS"])
    assert second.stdout_path != first.stdout_path
    assert not _KEY_LINE.findall(second.stdout()), "a second start printed a key"
    assert key not in second.output()
    _works(second, key)
    with second.client(headers={"Authorization": "Bearer srb_" + "x" * 43}) as client:
        assert client.get(f"/v1/streams/{TOPIC}").status_code == 401


def test_configured_keys_suppress_the_bootstrap_key(
    start_gateway: Callable[..., GatewayProcess],
) -> None:
    gateway = start_gateway()
    assert not _KEY_LINE.findall(gateway.stdout())
    assert not any("bootstrap" in path.name for path in _files(gateway.data_dir))
    _works(gateway, KEY)


def test_config_show_prints_json_with_keys_redacted(tmp_path: Path) -> None:
    env_file = tmp_path / "strongroom.env"
    revoked = "revoked-key-00112233445566"
    env_file.write_text(f"STRONGROOM_REVOKED_KEYS={revoked}\n")
    result = cli(
        "config", "show", "--data-dir", str(tmp_path / "d"),
        env={
            "STRONGROOM_API_KEYS": f"{KEY},{OTHER_KEY}",
            "STRONGROOM_ENV_FILE": str(env_file),
            "STRONGROOM_RATELIMIT_RPS": "42",
        },
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    for secret in (KEY, OTHER_KEY, revoked):
        assert secret not in result.stdout
        assert secret not in result.stderr
    assert "2" in shown["api_keys"]
    assert "redacted" in shown["api_keys"]
    assert "redacted" in shown["revoked_keys"]
    assert shown["ratelimit_rps"] == 42
    assert shown["data_dir"] == str(tmp_path / "d")
    assert shown["port"] == 8080
    assert shown["host"] == "127.0.0.1"


INVALID = [
    pytest.param({"STRONGROOM_PORT": "abc"}, "STRONGROOM_PORT", id="port-abc"),
    pytest.param({"STRONGROOM_RATELIMIT_RPS": "0"}, "STRONGROOM_RATELIMIT_RPS", id="rps-zero"),
    pytest.param({"STRONGROOM_API_KEYS": "sh0rt-k3y"}, "STRONGROOM_API_KEYS", id="short-key"),
]


@pytest.mark.parametrize(("env", "variable"), INVALID)
@pytest.mark.parametrize("command", ["serve", "config show"])
def test_invalid_configuration_exits_2_with_one_line_naming_the_variable(
    env: dict[str, str], variable: str, command: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    arguments = [*command.split(), "--data-dir", str(data_dir)]
    try:
        result = cli(*arguments, env=env, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`{command}` with {env} kept running instead of refusing the configuration")
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"Error: {variable}"), lines[0]
    assert "Traceback" not in result.stderr
    assert "sh0rt-k3y" not in result.stderr + result.stdout, "the rejected key was echoed"
    assert not data_dir.exists(), "a refused configuration still created the data dir"


def test_serve_with_a_port_flag_and_an_invalid_port_variable_uses_the_flag(
    start_gateway: Callable[..., GatewayProcess],
) -> None:
    # The command line wins over the environment, as for --data-dir.
    gateway = start_gateway(env={"STRONGROOM_PORT": "abc"})
    _works(gateway, KEY)


def test_missing_env_file_is_a_configuration_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.env"
    result = cli("config", "show", env={"STRONGROOM_ENV_FILE": str(missing)})
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"Error: STRONGROOM_ENV_FILE: no such file: {missing}"]


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["-m", "strongroom", "--help"], id="python-m"),
        pytest.param(["script", "--help"], id="script"),
    ],
)
def test_help_works(argv: list[str]) -> None:
    command = [*strongroom_command(), *argv[1:]] if argv[0] == "script" else [sys.executable, *argv]
    result = subprocess.run(
        command, capture_output=True, text=True, env=clean_env(), timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout
    assert result.stderr == ""
    for name in ("serve", "config", "stream"):
        assert name in result.stdout
