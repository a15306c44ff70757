"""Checkpoint notes: the signed-note text round-trips, malformed notes are refused, and a
running gateway signs one every N records and at shutdown.

1. ``domain.checkpoints.parse`` then ``text()`` gives back the exact text, for notes
   the gateway signed and for any well-formed note.
2. Malformed notes raise ``CheckpointError``: a missing blank line or signature line,
   wrong body lines, a size, root or timestamp that is not in its one canonical form,
   a signature that is not base64 or not 4 + 64 bytes, no key name.
3. With STRONGROOM_AUDIT_CHECKPOINT_RECORDS=5 (and a long time interval) a real
   server signs a checkpoint within about a second once 5 records have been added
   since the last one (at sizes 5 and 10 here), and not before.
4. On SIGTERM the server signs a checkpoint covering every record it wrote.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
from audit_support import (
    AuditApp,
    bootstrap_key,
    checkpoint_sizes,
    database,
    open_state,
    verify_in_process,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.domain.checkpoints import (
    Checkpoint,
    CheckpointError,
    SignedCheckpoint,
    parse,
)
from support import UNTHROTTLED_ENV, GatewayProcess, bearer

EM_DASH: Final = "\u2014 "
ROOT: Final = hashlib.sha256(b"root").digest()
ROOT_B64: Final = base64.b64encode(ROOT).decode()
BLOB: Final = base64.b64encode(b"\x0a\x0b\x0c\x0d" + b"\x5a" * 64).decode()
GOOD: Final = f"example.org/log\n42\n{ROOT_B64}\ntimestamp 1795000000\n\n{EM_DASH}audit {BLOB}\n"

# -- the format --------------------------------------------------------------------------------


def test_a_hand_written_note_round_trips() -> None:
    signed = parse(GOOD)
    assert signed.checkpoint == Checkpoint("example.org/log", 42, ROOT, 1795000000)
    assert signed.key_name == "audit"
    assert signed.key_id == b"\x0a\x0b\x0c\x0d"
    assert signed.signature == b"\x5a" * 64
    assert signed.text() == GOOD
    assert signed.checkpoint.body() == GOOD.split("\n\n")[0] + "\n"


async def test_notes_the_gateway_signed_round_trip(audit_app: AuditApp) -> None:
    trail = audit_app.state.audit
    texts = []
    for index in range(4):
        await trail.record("test.action", actor=f"actor-{index}")
        signed = await trail.checkpoint()
        assert signed is not None
        texts.append(signed.text())
    with database(audit_app.data_dir) as connection:
        stored = [note for (note,) in connection.execute("SELECT note FROM audit_checkpoints")]
    assert stored == texts
    for text in texts:
        parsed = parse(text)
        assert parsed.text() == text
        assert trail.check_signature(parsed)
    latest = await audit_app.http.get(
        "/v1/audit/checkpoints/latest", headers=bearer(audit_app.platform)
    )
    assert latest.status_code == 200, latest.text
    assert latest.json()["text"] == texts[-1]
    assert parse(latest.json()["text"]).text() == texts[-1]


single_line = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n"), max_size=40
)


@settings(max_examples=300, deadline=None, database=None)
@given(
    origin=single_line,
    size=st.integers(min_value=0, max_value=2**64 - 1),
    root=st.binary(min_size=32, max_size=32),
    timestamp=st.integers(min_value=0, max_value=2**40),
    name=single_line.filter(lambda n: n.strip(" ") == n and n != ""),
    key_id=st.binary(min_size=4, max_size=4),
    signature=st.binary(min_size=64, max_size=64),
)
def test_any_well_formed_note_round_trips(
    origin: str, size: int, root: bytes, timestamp: int, name: str, key_id: bytes,
    signature: bytes,
) -> None:  # fmt: skip
    signed = SignedCheckpoint(Checkpoint(origin, size, root, timestamp), name, key_id, signature)
    text = signed.text()
    parsed = parse(text)
    assert parsed == signed
    assert parsed.text() == text


def _replace_line(index: int, value: str) -> str:
    body, _, rest = GOOD.partition("\n\n")
    lines = body.split("\n")
    lines[index] = value
    return "\n".join(lines) + "\n\n" + rest


def _signature_line(value: str) -> str:
    body, _, _ = GOOD.partition("\n\n")
    return body + "\n\n" + value + "\n"


MALFORMED: Final[dict[str, str]] = {
    "empty": "",
    "body only": GOOD.partition("\n\n")[0] + "\n",
    "no blank line": GOOD.replace("\n\n", "\n"),
    "crlf line ends": GOOD.replace("\n", "\r\n"),
    "three body lines": GOOD.replace("42\n", ""),
    "five body lines": GOOD.replace("42\n", "42\nextra\n"),
    "no timestamp keyword": _replace_line(3, "1795000000"),
    "size not a number": _replace_line(1, "forty-two"),
    "size negative": _replace_line(1, "-42"),
    "size with a leading zero": _replace_line(1, "042"),
    "size with a plus sign": _replace_line(1, "+42"),
    "size with a space": _replace_line(1, " 42"),
    "size with an underscore": _replace_line(1, "4_2"),
    "root not base64": _replace_line(2, "not base64 at all!"),
    "root of 31 bytes": _replace_line(2, base64.b64encode(ROOT[:31]).decode()),
    "root of 33 bytes": _replace_line(2, base64.b64encode(ROOT + b"\x00").decode()),
    "root empty": _replace_line(2, ""),
    "timestamp not a number": _replace_line(3, "timestamp soon"),
    "timestamp empty": _replace_line(3, "timestamp "),
    "timestamp with a leading zero": _replace_line(3, "timestamp 01795000000"),
    "timestamp with a plus sign": _replace_line(3, "timestamp +1795000000"),
    "timestamp with an extra space": _replace_line(3, "timestamp  1795000000"),
    "timestamp with an underscore": _replace_line(3, "timestamp 1_795_000_000"),
    "no signature line": GOOD.partition("\n\n")[0] + "\n\n",
    "signature without the em dash": _signature_line(f"- audit {BLOB}"),
    "signature with a hyphen dash": _signature_line(f"-- audit {BLOB}"),
    "signature not base64": _signature_line(f"{EM_DASH}audit ###"),
    "signature too short": _signature_line(
        EM_DASH + "audit " + base64.b64encode(b"\x00" * 67).decode()
    ),
    "signature too long": _signature_line(
        EM_DASH + "audit " + base64.b64encode(b"\x00" * 69).decode()
    ),
    "signature without a key name": _signature_line(f"{EM_DASH}{BLOB}"),
    "signature with an empty key name": _signature_line(f"{EM_DASH} {BLOB}"),
}


@pytest.mark.parametrize("text", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_notes_are_refused(text: str) -> None:
    with pytest.raises(CheckpointError):
        parse(text)


# -- a running gateway -----------------------------------------------------------------------


def _latest(http: httpx.Client, platform: dict[str, str]) -> dict[str, Any] | None:
    response = http.get("/v1/audit/checkpoints/latest", headers=platform)
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _add_records(http: httpx.Client, count: int) -> None:
    """``count`` audit records: one ``auth.failed`` per refused request."""
    for index in range(count):
        response = http.get("/v1/audit", headers=bearer(f"no-such-key-{index:012d}"))
        assert response.status_code == 401, response.text


def _size(http: httpx.Client, platform: dict[str, str]) -> int:
    response = http.get("/v1/audit", params={"limit": 1000}, headers=platform)
    assert response.status_code == 200, response.text
    return len(response.json()["data"])


def _wait_for_checkpoint(
    http: httpx.Client,
    platform: dict[str, str],
    size: int,
    data_dir: Path,
    timeout: float = 3.0,
) -> dict[str, Any]:
    # Watch the table, not the endpoint: asking for the latest checkpoint of a log
    # that has none yet signs one, which would change what is being observed.
    deadline = time.monotonic() + timeout
    while True:
        with database(data_dir) as connection:
            sizes = checkpoint_sizes(connection)
        if sizes and sizes[-1] >= size:
            latest = _latest(http, platform)
            assert latest is not None
            return latest
        assert time.monotonic() < deadline, f"no checkpoint of size {size}; signed: {sizes}"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_checkpoint_is_signed_every_n_records(
    start_server: Callable[..., GatewayProcess],
) -> None:
    server = start_server(
        env={
            **UNTHROTTLED_ENV,
            "STRONGROOM_AUDIT_CHECKPOINT_RECORDS": "5",
            "STRONGROOM_AUDIT_CHECKPOINT_SECONDS": "86400",
        },
        configured_keys=False,
    )
    platform = bearer(bootstrap_key(server))
    with server.client() as http:
        assert _size(http, platform) == 2  # the first tenant and its platform admin key
        with database(server.data_dir) as connection:
            assert checkpoint_sizes(connection) == []

        _add_records(http, 3)  # 5 records
        assert _wait_for_checkpoint(http, platform, 5, server.data_dir)["tree_size"] == 5

        _add_records(http, 4)  # 9 records: 4 since the last checkpoint
        time.sleep(1.5)  # more than one checking interval
        latest = _latest(http, platform)
        assert latest is not None
        assert latest["tree_size"] == 5

        _add_records(http, 1)  # 10 records: the fifth since the last checkpoint
        assert _wait_for_checkpoint(http, platform, 10, server.data_dir)["tree_size"] == 10

        _add_records(http, 4)  # 14 records, 12 of them driven here
        assert _size(http, platform) == 14
    with database(server.data_dir) as connection:
        assert checkpoint_sizes(connection) == [5, 10]


@pytest.mark.slow
def test_shutdown_signs_a_checkpoint_covering_every_record(
    start_server: Callable[..., GatewayProcess],
) -> None:
    server = start_server(
        env={**UNTHROTTLED_ENV, "STRONGROOM_AUDIT_CHECKPOINT_SECONDS": "86400"},
        configured_keys=False,
    )
    platform = bearer(bootstrap_key(server))
    with server.client() as http:
        _add_records(http, 6)
        assert _size(http, platform) == 8
        with database(server.data_dir) as connection:
            assert checkpoint_sizes(connection) == []
    server.signal(signal.SIGTERM)
    assert server.process is not None
    # A clean stop; uvicorn re-raises the captured SIGTERM after shutting down.
    assert server.process.wait(30) in (0, -signal.SIGTERM), server.output()
    assert "gateway_stopped" in server.output()

    with database(server.data_dir) as connection:
        (records,) = connection.execute("SELECT count(*) FROM audit_records").fetchone()
        assert records == 8
        assert checkpoint_sizes(connection) == [8]
        (note,) = connection.execute("SELECT note FROM audit_checkpoints").fetchone()
    assert parse(note).checkpoint.tree_size == 8
    verdict = verify_in_process(server.data_dir)
    assert verdict.returncode == 0, verdict
    assert verdict.report["checkpoints"] == 1
    assert verdict.report["unsigned_tail"] == 0


def test_the_verify_command_reports_the_unsigned_tail(tmp_path: Path) -> None:
    """Records after the newest checkpoint verify, and are counted as unsigned."""

    async def build() -> Path:
        async with open_state(tmp_path) as state:
            for index in range(5):
                await state.audit.record("test.action", actor=f"actor-{index}")
            assert await state.audit.checkpoint() is not None
            for index in range(3):
                await state.audit.record("test.action", actor=f"later-{index}")
            return state.settings.data_dir

    data_dir = asyncio.run(build())
    verdict = verify_in_process(data_dir)
    assert verdict.returncode == 0, verdict
    assert verdict.report["records"] == 8
    assert verdict.report["checkpoints"] == 1
    assert verdict.report["unsigned_tail"] == 3


@pytest.mark.slow
def test_the_latest_checkpoint_is_signed_on_demand_for_a_young_log(
    start_server: Callable[..., GatewayProcess],
) -> None:
    """A verifier asking before the first periodic checkpoint gets one covering the log."""
    server = start_server(
        env={**UNTHROTTLED_ENV, "STRONGROOM_AUDIT_CHECKPOINT_SECONDS": "86400"},
        configured_keys=False,
    )
    platform = bearer(bootstrap_key(server))
    with server.client() as http:
        _add_records(http, 3)
        size = _size(http, platform)
        latest = _latest(http, platform)
        assert latest is not None
        assert latest["tree_size"] == size
        again = _latest(http, platform)
        assert again == latest  # nothing new was appended, so nothing new is signed
    with database(server.data_dir) as connection:
        assert checkpoint_sizes(connection) == [size]
