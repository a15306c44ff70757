"""Card numbers never reach OpenBao: its file storage, after a gateway vaulted cards.

With OpenBao as the key manager, Strongroom sends it only data keys to wrap and
unwrap. A real (non-dev) OpenBao keeps its storage in files here (integrated
raft storage, which OpenBao seals with its own barrier key); after cards
are tokenized, sent inside events and detokenized, no planted number appears
in any file of that storage, nor in OpenBao's output.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from support import AUTH, GatewayProcess
from support_openbao import new_key_name, openbao_file_server

PLANTED = ("4111111111111111", "5555555555554444", "378282246310005", "6011111111111117")


def _event(number: str) -> dict[str, object]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "payment.authorized",
        "event_timestamp": "2026-11-22T10:00:00Z",
        "processor": "stripe",
        "amount": 1200,
        "currency": "EUR",
        "card": {"number": number, "exp_month": 12, "exp_year": 2040},
    }


def test_openbao_storage_holds_no_card_number(tmp_path: Path) -> None:
    with openbao_file_server(tmp_path / "openbao") as (server, storage):
        env = {
            "STRONGROOM_KMS_URL": server.kms_url(new_key_name()),
            "STRONGROOM_VAULT_TOKEN": server.token,
            "STRONGROOM_KMS_TIMEOUT_SECONDS": "10",
            # Every data key is unwrapped through OpenBao, not served from memory.
            "STRONGROOM_DATA_KEY_CACHE_SECONDS": "0",
        }
        gateway = GatewayProcess(tmp_path / "data", env=env).start(timeout=30.0)
        try:
            with gateway.client() as client:
                tokens = []
                for number in PLANTED:
                    response = client.post(
                        "/v1/tokens",
                        json={"number": number, "exp_month": 12, "exp_year": 2040},
                        headers=AUTH,
                    )
                    assert response.status_code == 201, response.text
                    tokens.append(response.json()["token"])
                    sent = client.post("/v1/events", json=_event(number), headers=AUTH)
                    assert sent.status_code == 202, sent.text
        finally:
            gateway.stop()
        files = [path for path in storage.rglob("*") if path.is_file()]
        output = server.output()
    assert files, "OpenBao stored nothing: the scan would prove nothing"
    stored = b"".join(path.read_bytes() for path in files)
    for number in PLANTED:
        assert number.encode() not in stored
        assert number not in output
    assert len(tokens) == len(PLANTED)
