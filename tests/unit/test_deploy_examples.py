"""The deployment examples in ``deploy/`` and their guide, ``docs/deploy.md``.

1. Every YAML file parses.
2. Every ``STRONGROOM_*`` name they mention is a real setting (a field of
   ``Settings``, or ``STRONGROOM_ENV_FILE``, which names the env file itself).
3. The compose file's gateways, the nginx upstream and the Prometheus targets
   name the same host:port pairs, and Prometheus scrapes the app's metrics route.
4. nginx speaks TLS 1.2 and 1.3 only, sends HSTS, limits bodies to the
   gateway's limit and replaces X-Forwarded-For; the gateways trust exactly
   nginx's address to set it.
5. No secret is written in the examples.
6. The systemd unit carries the hardening options, and may write only the data dir.
7. Where ``nginx`` or ``systemd-analyze`` is installed, each accepts its file.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

import pytest
import yaml
from pydantic import SecretStr

from strongroom.api.routes.operations import router as operations_router
from strongroom.config import ENV_FILE_VARIABLE, ENV_PREFIX, Settings

ROOT: Final = Path(__file__).resolve().parents[2]
DEPLOY: Final = ROOT / "deploy"
GUIDE: Final = ROOT / "docs" / "deploy.md"
COMPOSE: Final = DEPLOY / "compose.yaml"
NGINX: Final = DEPLOY / "nginx" / "strongroom.conf"
PROMETHEUS: Final = DEPLOY / "prometheus" / "prometheus.yml"
UNIT: Final = DEPLOY / "systemd" / "strongroom@.service"

YAML_FILES: Final = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])
TEXT_FILES: Final = sorted(path for path in DEPLOY.rglob("*") if path.is_file())
SETTING: Final = re.compile(r"\bSTRONGROOM_[A-Z0-9_]+\b")
#: ``scheme://user:password@`` with a literal password (a ``$(...)`` read from a
#: secret file is not one).
CREDENTIALS_IN_URL: Final = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:(?!\$)[^/\s@]+@")
ONE_YEAR: Final = 365 * 24 * 3600


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


def real_settings() -> set[str]:
    return {ENV_PREFIX + name.upper() for name in Settings.model_fields} | {ENV_FILE_VARIABLE}


def secret_settings() -> set[str]:
    """Settings holding secrets: single ``SecretStr`` values and key lists."""
    secret = set()
    for name, field in Settings.model_fields.items():
        annotation = repr(field.annotation)
        if "SecretStr" in annotation or field.annotation is SecretStr:
            secret.add(ENV_PREFIX + name.upper())
    return secret


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def compose_gateways() -> dict[str, dict[str, Any]]:
    """The compose services that run ``strongroom serve``."""
    services = load(COMPOSE)["services"]
    return {name: spec for name, spec in services.items() if spec.get("command") == ["serve"]}


def nginx_text() -> str:
    """The nginx file without comments."""
    return "\n".join(line.split("#", 1)[0] for line in NGINX.read_text().splitlines())


def nginx_upstream() -> set[str]:
    block = re.search(r"upstream\s+strongroom\s*\{(.*?)\}", nginx_text(), re.DOTALL)
    assert block, "nginx has no upstream named strongroom"
    return set(re.findall(r"^\s*server\s+(\S+?)(?:\s[^;]*)?;", block.group(1), re.MULTILINE))


def nginx_size(value: str) -> int:
    units = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
    parsed = re.fullmatch(r"(\d+)([kmg]?)", value.lower())
    assert parsed is not None, f"not an nginx size: {value}"
    return int(parsed.group(1)) * units[parsed.group(2)]


def nginx_directive(name: str) -> list[str]:
    """The values of every ``name`` directive (a quoted ``;`` does not end one)."""
    value = r"""((?:"[^"]*"|'[^']*'|[^;"'])+)"""
    return re.findall(rf"^\s*{name}\s+{value};", nginx_text(), re.MULTILINE)


# -- 1, 2 --------------------------------------------------------------------------


def test_there_are_examples_to_check() -> None:
    assert COMPOSE in YAML_FILES
    assert PROMETHEUS in YAML_FILES
    assert NGINX.is_file()
    assert UNIT.is_file()
    assert GUIDE.is_file()


@pytest.mark.parametrize("path", YAML_FILES, ids=relative)
def test_every_yaml_file_parses(path: Path) -> None:
    assert isinstance(load(path), dict), f"{relative(path)} is not a YAML mapping"


def test_every_strongroom_variable_named_is_a_real_setting() -> None:
    named: dict[str, set[str]] = {}
    for path in [*TEXT_FILES, GUIDE]:
        for name in SETTING.findall(path.read_text()):
            named.setdefault(name, set()).add(relative(path))

    unknown = {name: sorted(where) for name, where in named.items() if name not in real_settings()}

    assert len(named) >= 10
    assert unknown == {}


def test_the_guide_names_every_example_file() -> None:
    guide = GUIDE.read_text()

    missing = [relative(path) for path in TEXT_FILES if path.name not in guide]

    assert missing == []


# -- 3 ---------------------------------------------------------------------------


def test_compose_gateways_nginx_upstream_and_prometheus_targets_agree() -> None:
    gateways = compose_gateways()
    in_compose = {
        f"{name}:{spec['environment']['STRONGROOM_PORT']}" for name, spec in gateways.items()
    }
    scrape = load(PROMETHEUS)["scrape_configs"]
    jobs = [job for job in scrape if job["job_name"] == "strongroom"]
    targets = {
        target for job in jobs for group in job["static_configs"] for target in group["targets"]
    }

    assert len(gateways) >= 2
    assert nginx_upstream() == in_compose
    assert targets == in_compose


def test_prometheus_scrapes_the_metrics_route_the_app_serves() -> None:
    paths = {getattr(route, "path", None) for route in operations_router.routes}
    jobs = [job for job in load(PROMETHEUS)["scrape_configs"] if job["job_name"] == "strongroom"]

    assert [job.get("metrics_path", "/metrics") for job in jobs] == ["/metrics"]
    assert "/metrics" in paths


def test_each_compose_gateway_checks_its_own_port_and_mounts_its_data_dir() -> None:
    for name, spec in compose_gateways().items():
        environment = spec["environment"]
        port = environment["STRONGROOM_PORT"]
        data_dir = environment["STRONGROOM_DATA_DIR"]
        probe = " ".join(spec["healthcheck"]["test"])
        mounts = [volume.split(":")[1] for volume in spec["volumes"]]
        assert f"127.0.0.1:{port}/ready" in probe, name
        assert data_dir in mounts, name


# -- 4 ---------------------------------------------------------------------------


def test_nginx_speaks_tls_1_2_and_1_3_only() -> None:
    protocols = nginx_directive("ssl_protocols")

    assert protocols, "nginx sets no ssl_protocols"
    assert all(set(value.split()) == {"TLSv1.2", "TLSv1.3"} for value in protocols)
    assert not re.search(r"SSLv|TLSv1(?:\.[01])?\b(?!\.)", nginx_text())


def test_nginx_sends_hsts_for_at_least_a_year_on_every_answer() -> None:
    headers = [
        value for value in nginx_directive("add_header") if value.startswith("Strict-Transport")
    ]

    assert len(headers) == 1
    max_age = re.search(r"max-age=(\d+)", headers[0])
    assert max_age is not None
    assert int(max_age.group(1)) >= ONE_YEAR
    assert headers[0].rstrip().endswith("always")
    # The gateway's own header is hidden, so clients see one.
    assert "Strict-Transport-Security" in nginx_directive("proxy_hide_header")


def test_nginx_body_limit_is_the_gateways_and_bodies_stay_in_memory() -> None:
    gateway_limit = Settings.model_fields["max_request_bytes"].default
    [body_limit] = nginx_directive("client_max_body_size")
    [body_buffer] = nginx_directive("client_body_buffer_size")

    assert nginx_size(body_limit) == gateway_limit
    assert nginx_size(body_buffer) >= gateway_limit
    assert nginx_directive("proxy_max_temp_file_size") == ["0"]


def test_nginx_replaces_x_forwarded_for_and_only_nginx_is_trusted_to_set_it() -> None:
    services = load(COMPOSE)["services"]
    nginx_address = services["nginx"]["networks"]["backend"]["ipv4_address"]

    assert "X-Forwarded-For $remote_addr" in nginx_directive("proxy_set_header")
    assert "$proxy_add_x_forwarded_for" not in nginx_text()
    for name, spec in compose_gateways().items():
        assert spec["environment"]["STRONGROOM_TRUSTED_PROXIES"] == nginx_address, name
    assert "Environment=STRONGROOM_TRUSTED_PROXIES=127.0.0.1,::1" in UNIT.read_text()


def test_nginx_does_not_expose_metrics() -> None:
    assert re.search(r"location\s*=\s*/metrics\s*\{\s*return\s+404;", nginx_text())


# -- 5 ---------------------------------------------------------------------------


def test_no_secret_is_written_in_the_examples() -> None:
    secret_names = secret_settings()
    found = []
    for path in TEXT_FILES:
        text = path.read_text()
        found += [f"{relative(path)}: {m}" for m in CREDENTIALS_IN_URL.findall(text)]
        found += [f"{relative(path)}: an API key" for _ in re.findall(r"sr_(?:live|test)_\w", text)]
        for name in secret_names:
            if re.search(rf"{name}\s*[=:]\s*\S", text):
                found.append(f"{relative(path)}: {name} is given a value")

    assert {"STRONGROOM_VAULT_TOKEN", "STRONGROOM_MASTER_KEY"} <= secret_names
    assert found == []


# -- 6 ---------------------------------------------------------------------------


def unit_directives(path: Path) -> list[tuple[str, str]]:
    pairs = []
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            pairs.append((key.strip(), value.strip()))
    return pairs


def test_the_systemd_unit_is_hardened_and_writes_only_its_data_dir() -> None:
    directives = unit_directives(UNIT)
    single = dict(directives)
    environment = dict(value.split("=", 1) for key, value in directives if key == "Environment")

    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "PrivateDevices": "yes",
        "RestrictSUIDSGID": "yes",
        "CapabilityBoundingSet": "",
    }.items():
        assert single.get(key) == value, key
    assert single["ReadWritePaths"].split() == [environment["STRONGROOM_DATA_DIR"]]
    assert environment["STRONGROOM_PORT"] == "%i"
    assert environment["STRONGROOM_HOST"] == "127.0.0.1"
    assert single["ExecStart"].endswith("strongroom serve")


# -- 7 ---------------------------------------------------------------------------


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate and key for nginx's syntax check."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "fullchain.pem", directory / "privkey.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _nginx_version(binary: str) -> tuple[int, ...]:
    banner = subprocess.run(
        [binary, "-v"], capture_output=True, text=True, timeout=30, check=False
    ).stderr
    found = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", banner)
    return tuple(int(part) for part in found.groups()) if found else (0, 0, 0)


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_nginx_accepts_the_configuration(tmp_path: Path) -> None:
    binary = shutil.which("nginx") or "nginx"
    cert, key = _self_signed(tmp_path)
    config = NGINX.read_text()
    config = config.replace("/etc/nginx/tls/fullchain.pem", str(cert))
    config = config.replace("/etc/nginx/tls/privkey.pem", str(key))
    # Compose service names do not resolve here; loopback keeps the same ports.
    config = re.sub(r"server\s+gateway-\d+:", "server 127.0.0.1:", config)
    if _nginx_version(binary) < (1, 25, 1):
        # Older nginx has no "http2" directive (HTTP/2 was a listen option).
        config = re.sub(r"^\s*http2 on;\n", "", config, flags=re.MULTILINE)
    (tmp_path / "strongroom.conf").write_text(config)
    # Temporary files under the test's prefix, not the packaged /var/lib/nginx.
    temp_paths = "".join(
        f"{kind}_temp_path {tmp_path / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path / 'nginx.pid'};\n"
        f"error_log {tmp_path / 'error.log'};\n"
        "events {}\n"
        f"http {{\n{temp_paths}access_log {tmp_path / 'access.log'};\n"
        f"include {tmp_path / 'strongroom.conf'};\n}}\n"
    )

    result = subprocess.run(
        [binary, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)
def test_systemd_analyze_accepts_the_units(tmp_path: Path) -> None:
    binary = shutil.which("systemd-analyze") or "systemd-analyze"
    # The unit's ExecStart must exist to verify: this interpreter stands in.
    units = []
    for path in sorted((DEPLOY / "systemd").glob("strongroom*")):
        name = path.name.replace("@.", "@8081.")
        text = re.sub(
            r"^ExecStart=\S+", f"ExecStart={sys.executable}", path.read_text(), flags=re.M
        )
        (tmp_path / name).write_text(text)
        units.append(str(tmp_path / name))

    result = subprocess.run(
        [binary, "verify", "--man=no", *units],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )

    ours = [line for line in result.stderr.splitlines() if "strongroom" in line]
    assert result.returncode == 0, result.stderr
    assert ours == []
    assert len(units) == 3
