"""Invariant 1 and 2, end to end: card data planted everywhere comes out nowhere.

One gateway is fed card numbers of several brands in every shape, through every
endpoint, header, query parameter, path segment and consumer name, plus CVV and
track-data attempts, with valid events in between. Then every response, the
server's own output, and every byte of the data dir (while running and after a
SIGTERM stop, -wal and -shm files included) are searched for them; on PostgreSQL
every value of every table of the gateway's database too.

The same numbers are also vaulted on purpose: tokenized via ``/v1/tokens``, sent as
``card.number`` in events (tokenized onto ``payments.tokenized``, sealed onto
``payments.raw``) and detokenized. Only the detokenize responses may show them; the
data dir (keyring included), the logs and every other response must not. The whole
run is repeated with OpenBao Transit as the key manager, reached through a recording
relay so that every byte the gateway exchanged with it is searched too, as is the
OpenBao server's output. (A dev server keeps its storage in memory, and OpenBao
enables audit devices only from its configuration file, so its storage itself cannot
be scanned; the relay sees everything that could have reached it.)
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_helpers import TOPIC, card_free_event, read_topic_http

from strongroom.crypto.transaction_signing import MoneyFields, sign_transaction
from strongroom.domain.cards import find_pan_spans, luhn_valid
from support import UNTHROTTLED_ENV, GatewayProcess, stored_contents
from support_database import on_postgres
from support_openbao import new_key_name, openbao_server

pytestmark = pytest.mark.slow


def _with_check_digit(prefix: str) -> str:
    for digit in "0123456789":
        if luhn_valid(prefix + digit):
            return prefix + digit
    raise AssertionError(prefix)


PANS: dict[str, str] = {
    "visa": "4111111111111111",
    "visa-13": "4222222222222",
    "visa-alt": "4012888888881881",
    "mastercard": "5555555555554444",
    "mastercard-2": "2223003122003222",
    "amex": "378282246310005",
    "discover": "6011111111111117",
    "diners": "30569309025904",
    "jcb": "3530111333300000",
    "unionpay-19": _with_check_digit("621700000000000000"),
    "maestro": "6759649826438453",
}
assert all(luhn_valid(pan) for pan in PANS.values())
#: Values planted in CVV, PIN and track-data fields; they must never be kept either.
SAD_MARKERS = ("cvvmarker7781", "pinmarker4420", "trackmarker9913")


def spaced(pan: str) -> str:
    return " ".join(pan[i : i + 4] for i in range(0, len(pan), 4))


def dashed(pan: str) -> str:
    return "-".join(pan[i : i + 4] for i in range(0, len(pan), 4))


def full_width(pan: str) -> str:
    return "".join(chr(0xFF10 + int(digit)) for digit in pan)


def json_escaped(pan: str) -> str:
    """The pan as JSON ``\\uXXXX`` escapes, as it would appear in a raw body."""
    return "".join(f"\\u{ord(digit):04x}" for digit in pan)


SHAPES = {
    "plain": lambda pan: pan,
    "spaced": spaced,
    "dashed": dashed,
    "full-width": full_width,
    "in-text": lambda pan: f"customer paid with {pan} yesterday",
    "glued": lambda pan: f"abc{pan}xyz",
}
STRING_FIELDS = [
    "event_id", "event_type", "event_timestamp", "processor", "merchant_id_hash",
    "payment_intent_id_hash", "failure_category", "geo_bucket", "amount_bucket",
    "system_source", "payment_method_bucket", "channel", "retry_result", "failure_origin",
    "currency",
]  # fmt: skip


def _brand(index: int) -> str:
    return list(PANS.values())[index % len(PANS)]


def _normalise(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


def _digits(text: str) -> str:
    return "".join(char for char in _normalise(text) if "0" <= char <= "9")


def leaked_pans(text: str) -> list[str]:
    """Planted PANs found in ``text``, in any shape: separators and non-digits ignored."""
    digits = _digits(text)
    return [pan for pan in PANS.values() if pan in digits]


def planted_spans(text: str) -> list[str]:
    """``find_pan_spans`` hits in ``text`` that carry a planted PAN (or 13+ digits of one).

    Raw database pages glue unrelated identifiers together, so a random hex id next to
    a digit byte can form a Luhn-valid run by chance; only planted numbers are leaks.
    """
    found = []
    for start, end in find_pan_spans(text):
        digits = _digits(text[start:end])
        if any(pan in digits or (len(digits) >= 13 and digits in pan) for pan in PANS.values()):
            found.append(text[max(0, start - 30) : end + 30])
    return found


def planted_forms() -> list[bytes]:
    forms: list[bytes] = []
    for pan in PANS.values():
        for text in (pan, spaced(pan), dashed(pan), full_width(pan), json_escaped(pan)):
            forms.append(text.encode())
    forms.extend(marker.encode() for marker in SAD_MARKERS)
    return forms


@dataclass
class Exchange:
    label: str
    status: int
    text: str
    expect_status: int | tuple[int, ...] | None
    expect_code: str | None
    code: str | None
    offered_request_id: str | None = None
    request_id: str | None = None
    #: The one planted number this response may show (a detokenize response), if any.
    reveals: str | None = None


@dataclass(repr=False)
class Findings:
    kms: str = "local"
    exchanges: list[Exchange] = field(default_factory=list)
    valid_ids: list[str] = field(default_factory=list)
    refused_valid_ids: list[str] = field(default_factory=list)
    stored_ids: list[str] = field(default_factory=list)
    #: The vault's tokens by planted-number name, and the purged one.
    tokens: dict[str, str] = field(default_factory=dict)
    purged: str = ""
    #: Event id → the planted-number name of every accepted event with ``card.number``.
    card_events: dict[str, str] = field(default_factory=dict)
    tokenized: list[dict[str, Any]] = field(default_factory=list)
    raw: list[dict[str, Any]] = field(default_factory=list)
    files_running: dict[str, bytes] = field(default_factory=dict)
    files_stopped: dict[str, bytes] = field(default_factory=dict)
    output: str = ""
    #: With OpenBao: its server output and every byte exchanged with it.
    kms_files: dict[str, bytes] = field(default_factory=dict)


def _response_text(response: httpx.Response) -> str:
    parts = [f"{name}: {value}" for name, value in response.headers.items()]
    parts.append(response.text)
    with contextlib.suppress(ValueError):
        parts.append(json.dumps(response.json(), ensure_ascii=False))
    return "\n".join(parts)


class Planter:
    """Sends the planted requests, interleaving valid events, and records every exchange."""

    def __init__(self, client: httpx.Client, findings: Findings, key: str) -> None:
        self.client = client
        self.findings = findings
        self.sent = 0
        self.auth = {"Authorization": f"Bearer {key}"}
        self.json = {**self.auth, "Content-Type": "application/json"}

    def send(
        self,
        label: str,
        method: str,
        url: str,
        *,
        expect_status: int | tuple[int, ...] | None = None,
        expect_code: str | None = None,
        reveals: str | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        response = self.client.request(method, url, **kwargs)
        code = None
        if response.headers.get("content-type", "").startswith("application/problem+json"):
            code = response.json().get("code")
        offered = (kwargs.get("headers") or {}).get("X-Request-ID")
        self.findings.exchanges.append(
            Exchange(
                label, response.status_code, _response_text(response), expect_status,
                expect_code, code, offered, response.headers.get("X-Request-ID"), reveals,
            )
        )  # fmt: skip
        self.sent += 1
        if self.sent % 7 == 0:
            self.valid_event()
        return response

    def valid_event(self) -> None:
        body = card_free_event(metadata={"note": "an ordinary event", "ref": "A-12-99"})
        response = self.client.post("/v1/events", json=body, headers=self.json)
        assert response.status_code == 202, response.text
        self.findings.valid_ids.append(body["event_id"])
        self.findings.exchanges.append(
            Exchange("valid event", 202, _response_text(response), 202, None, None)
        )

    def refused(
        self, label: str, method: str, url: str, *, code: str = "pan_detected", **kw: Any
    ) -> None:
        """A request carrying card data: it must be refused with 422 and ``code``."""
        kw.setdefault("headers", self.json if "json" in kw else self.auth)
        self.send(label, method, url, expect_status=422, expect_code=code, **kw)

    def ingest(self, label: str, body: Any, *, code: str = "pan_detected", **kw: Any) -> None:
        if isinstance(body, bytes):
            kw["content"] = body
        else:
            kw["json"] = body
        self.send(
            label, "POST", kw.pop("url", "/v1/events"), headers=self.json,
            expect_status=422, expect_code=code, **kw,
        )  # fmt: skip


def _plant_in_events(planter: Planter) -> None:
    index = 0
    for name in STRING_FIELDS:
        for shape, make in SHAPES.items():
            index += 1
            planter.ingest(f"{name} {shape}", card_free_event(**{name: make(_brand(index))}))
    for shape, make in SHAPES.items():
        index += 1
        pan = make(_brand(index))
        planter.ingest(f"metadata value {shape}", card_free_event(metadata={"note": pan}))
        if len(pan) <= 64:
            planter.ingest(f"metadata key {shape}", card_free_event(metadata={pan: "x"}))
    for number in (4111111111111111, 378282246310005, 4222222222222, 6011111111111117):
        planter.ingest(f"amount {number}", card_free_event(amount=number))
    for raw in (b"4111111111111111.0", b"4.111111111111111e15", b"4111111111111111e0"):
        body = json.dumps(card_free_event(amount=1)).replace(
            '"amount": 1', '"amount": ' + raw.decode()
        )
        planter.ingest(f"amount {raw.decode()}", body.encode())
    # JSON \\u escapes: the raw body holds no digit run at all.
    for index, (where, template) in enumerate(
        [
            ("escaped value", '"metadata": {"note": "PLACE"}'),
            ("escaped key", '"metadata": {"PLACE": "x"}'),
            ("escaped field", '"geo_bucket": "PLACE"'),
        ]
    ):
        base = card_free_event()
        base.pop("geo_bucket")
        text = json.dumps(base)[:-1] + ", " + template + "}"
        planter.ingest(where, text.replace("PLACE", json_escaped(_brand(index))).encode())
    batch = [card_free_event() for _ in range(3)]
    planter.findings.refused_valid_ids.extend(e["event_id"] for e in batch)
    batch.append(card_free_event(metadata={"card": dashed(PANS["mastercard"])}))
    planter.ingest("batch with one card", {"events": batch})
    planter.ingest(
        "payflux route", card_free_event(channel=PANS["amex"]), url="/v1/events/payment_exhaust"
    )
    planter.ingest("unknown field", {**card_free_event(), "card_number": PANS["visa"]})
    planter.ingest("nested unknown field", {"events": [{"card": {"pan": PANS["jcb"]}}]})
    planter.ingest("invalid json", f'{{"event_id": "{PANS["discover"]}", '.encode())
    planter.ingest("json string body", json.dumps(PANS["visa"]).encode())
    planter.ingest("json number body", PANS["visa"].encode())
    planter.send(
        "text/plain body", "POST", "/v1/events", content=PANS["visa"].encode(),
        headers={**planter.auth, "Content-Type": "text/plain"}, expect_status=(415, 422),
    )  # fmt: skip
    big = (spaced(PANS["visa"]) + "\n").encode() * 70_000
    planter.send(
        "oversized body", "POST", "/v1/events", content=big, headers=planter.json,
        expect_status=413,
    )  # fmt: skip


def _plant_sad(planter: Planter) -> None:
    cvv, pin, track = SAD_MARKERS
    code = "sensitive_authentication_data"
    planter.ingest("cvv field", {**card_free_event(), "cvv": cvv}, code=code)
    for key in ("cvv", "CVC2", "Card-Verification-Value", "security_code", "c_v_v"):
        planter.ingest(f"metadata {key}", card_free_event(metadata={key: cvv}), code=code)
    planter.ingest("metadata pin", card_free_event(metadata={"PIN": pin}), code=code)
    planter.ingest("metadata pin block", card_free_event(metadata={"pin_block": pin}), code=code)
    planter.ingest("track2", card_free_event(metadata={"track2": track}), code=code)
    planter.ingest("Track 1", card_free_event(metadata={"Track 1": track}), code=code)
    planter.ingest("track_data", card_free_event(metadata={"track_data": track}), code=code)
    planter.ingest("escaped cvv key", b'{"\\u0063vv": "' + cvv.encode() + b'"}', code=code)
    track_data = f";{PANS['visa']}=25121010000012300000?"
    planter.ingest("track data as a value", card_free_event(metadata={"note": track_data}))
    planter.ingest(
        "cvv in a batch",
        {"events": [card_free_event(), {**card_free_event(), "cvc": cvv}]},
        code=code,
    )


def _plant_in_headers(planter: Planter) -> None:
    for label, value in [
        ("plain", PANS["visa"]),
        ("dashed", dashed(PANS["mastercard"])),
        ("prefixed", f"req.{PANS['amex']}"),
        ("suffixed", f"{PANS['discover']}.trace"),
    ]:
        planter.send(
            f"x-request-id {label} on ingest", "POST", "/v1/events",
            json=card_free_event(), headers={**planter.json, "X-Request-ID": value},
            expect_status=202,
        )  # fmt: skip
        planter.send(
            f"x-request-id {label} on health", "GET", "/health",
            headers={"X-Request-ID": value}, expect_status=200,
        )  # fmt: skip
        planter.send(
            f"x-request-id {label} on a refusal", "GET", f"/v1/streams/{TOPIC}",
            headers={"X-Request-ID": value}, expect_status=401,
        )  # fmt: skip
    for label, value in [
        ("bearer plain", f"Bearer {PANS['visa']}"),
        ("bearer spaced", f"Bearer {spaced(PANS['jcb'])}"),
        ("bearer dashed", f"Bearer {dashed(PANS['unionpay-19'])}"),
        ("bare", PANS["maestro"]),
        ("basic", f"Basic {PANS['diners']}"),
        ("key then pan", f"Bearer test-key-0123456789abcdef{PANS['visa']}"),
    ]:
        planter.send(
            f"authorization {label}", "GET", f"/v1/streams/{TOPIC}",
            headers={"Authorization": value}, expect_status=401,
        )  # fmt: skip
    planter.send(
        "custom header", "GET", f"/v1/streams/{TOPIC}",
        headers={**planter.auth, "X-Card": PANS["visa"], "User-Agent": f"agent {PANS['amex']}"},
        expect_status=200,
    )  # fmt: skip


def _plant_in_urls(planter: Planter) -> None:
    refused = planter.refused
    topic_url = f"/v1/streams/{TOPIC}"
    for index, (name, value) in enumerate(
        [
            ("after", PANS["visa"]),
            ("after", spaced(PANS["visa"])),
            ("after", dashed(PANS["amex"])),
            ("after", full_width(PANS["discover"])),
            ("limit", PANS["discover"]),
            ("limit", full_width(PANS["jcb"])),
            ("cursor", PANS["maestro"]),
        ]
    ):
        refused(f"query {name} #{index}", "GET", topic_url, params={name: value})
    for value in (PANS["visa"], dashed(PANS["mastercard"]), spaced(PANS["amex"])):
        refused("query group", "GET", f"{topic_url}/dead-letters", params={"group": value})
    refused("query on health", "GET", "/health", params={"q": PANS["visa"]})
    # httpx form-encodes the spaces as "+", as browsers and most clients do.
    refused("spaced query on health", "GET", "/health", params={"q": spaced(PANS["visa"])})
    refused("spaced keys cursor", "GET", "/v1/keys", params={"after": spaced(PANS["jcb"])})
    refused("query on metrics", "GET", "/metrics", params={PANS["visa"]: "1"})
    refused("query on ready", "GET", "/ready", params={"x": dashed(PANS["visa"])})
    for shape, make in SHAPES.items():
        segment = make(PANS["visa-alt"])
        refused(f"topic path {shape}", "GET", f"/v1/streams/{segment}")
        refused(f"topic path {shape} dead letters", "GET", f"/v1/streams/{segment}/dead-letters")
        refused(
            f"group read on topic {shape}", "POST", f"/v1/streams/{segment}/groups/g1/read",
            json={"consumer": "c1"},
        )  # fmt: skip
        refused(
            f"group path {shape}", "POST", f"{topic_url}/groups/{segment}/read",
            json={"consumer": "reader", "limit": 5},
        )  # fmt: skip
        refused(
            f"group ack path {shape}", "POST", f"{topic_url}/groups/{segment}/ack",
            json={"offsets": [0]},
        )  # fmt: skip
        refused(
            f"group replay path {shape}", "POST",
            f"{topic_url}/groups/{segment}/dead-letters/replay", json={},
        )  # fmt: skip
        refused(f"unknown path {shape}", "GET", f"/v1/{segment}")
        refused(f"unauthenticated path {shape}", "GET", f"/{segment}", headers={})
        refused(f"tenant path {shape}", "GET", f"/v1/admin/tenants/{segment}")
    refused("method not allowed", "DELETE", f"/v1/streams/{PANS['visa']}")


def _plant_in_consumers(planter: Planter) -> None:
    refused = planter.refused
    url = f"/v1/streams/{TOPIC}/groups/auditors/read"
    for shape, make in SHAPES.items():
        refused(f"consumer {shape}", "POST", url, json={"consumer": make(PANS["mastercard-2"])})
    refused("consumer extra field", "POST", url, json={"consumer": "ok", "note": PANS["visa"]})
    refused(
        "consumer cvv field", "POST", url, json={"consumer": "ok", "cvv": SAD_MARKERS[0]},
        code="sensitive_authentication_data",
    )  # fmt: skip
    refused(
        "visibility as a pan", "POST", url,
        json={"consumer": "ok", "visibility_timeout_seconds": int(PANS["visa"])},
    )  # fmt: skip
    refused(
        "ack offsets as pans", "POST", f"/v1/streams/{TOPIC}/groups/auditors/ack",
        json={"offsets": [int(PANS["visa"]), int(PANS["amex"])]},
    )  # fmt: skip
    refused(
        "replay offsets as pans", "POST",
        f"/v1/streams/{TOPIC}/groups/auditors/dead-letters/replay",
        json={"dead_letter_offsets": [int(PANS["visa"])]},
    )  # fmt: skip


def _plant_in_admin(planter: Planter) -> None:
    refused = planter.refused
    for shape, make in SHAPES.items():
        pan = make(PANS["diners"])
        refused(f"key name {shape}", "POST", "/v1/keys", json={"name": pan, "role": "viewer"})
        refused(f"tenant name {shape}", "POST", "/v1/admin/tenants", json={"name": pan})
    refused(
        "key scopes", "POST", "/v1/keys",
        json={"name": "ok", "role": "viewer", "scopes": [PANS["visa"]]},
    )  # fmt: skip
    refused("keys after", "GET", "/v1/keys", params={"after": PANS["visa"]})
    refused("tenants after", "GET", "/v1/admin/tenants", params={"after": dashed(PANS["jcb"])})
    refused("audit actor", "GET", "/v1/audit", params={"actor": PANS["visa"]})
    refused("audit after", "GET", "/v1/audit", params={"after": PANS["amex"]})
    refused(
        "audit proof", "GET", "/v1/audit/proof/inclusion",
        params={"seq": PANS["visa"], "tree_size": PANS["visa"]},
    )  # fmt: skip
    refused("usage from", "GET", "/v1/usage", params={"from": PANS["visa"]})
    # Legitimate administration, so keys, tenants and audit records are on disk too.
    for method, url, body, status in [
        ("POST", "/v1/keys", {"name": "reporting", "role": "viewer"}, 201),
        ("POST", "/v1/admin/tenants", {"name": "acme-payments"}, 201),
        ("GET", "/v1/keys", None, 200),
        ("GET", "/v1/admin/tenants", None, 200),
        ("GET", "/v1/audit", None, 200),
        ("GET", "/v1/usage", None, 200),
    ]:
        planter.send(
            f"valid {method} {url}", method, url, json=body, headers=planter.json,
            expect_status=status,
        )  # fmt: skip


def _vault_card(pan: str, **extra: Any) -> dict[str, Any]:
    return {"number": pan, "exp_month": 12, "exp_year": datetime.now(UTC).year + 3, **extra}


def _plant_in_vault(planter: Planter) -> None:
    """Vault every planted number on purpose: tokens, events with ``card.number``, a
    signed one, refusals of bad cards, describing, detokenizing and purging."""
    findings = planter.findings
    tokens = findings.tokens
    for name, pan in PANS.items():
        response = planter.send(
            f"tokenize {name}", "POST", "/v1/tokens", json=_vault_card(pan),
            headers=planter.json, expect_status=201,
        )  # fmt: skip
        tokens[name] = response.json()["token"]
    planter.send(
        "tokenize again", "POST", "/v1/tokens", json=_vault_card(PANS["visa"]),
        headers=planter.json, expect_status=200,
    )  # fmt: skip
    for name, pan in PANS.items():
        body = card_free_event(card=_vault_card(pan), amount=1234, currency="EUR")
        planter.send(
            f"event with card {name}", "POST", "/v1/events", json=body,
            headers=planter.json, expect_status=202,
        )  # fmt: skip
        findings.card_events[body["event_id"]] = name
    names = ["amex", "jcb", "unionpay-19"]
    batch = [card_free_event(card=_vault_card(PANS[name])) for name in names]
    planter.send(
        "batch of card events", "POST", "/v1/events", json={"events": batch},
        headers=planter.json, expect_status=202,
    )  # fmt: skip
    findings.card_events.update({e["event_id"]: n for e, n in zip(batch, names, strict=True)})
    body = card_free_event(card=_vault_card(PANS["maestro"]))
    planter.send(
        "payflux route with card", "POST", "/v1/events/payment_exhaust", json=body,
        headers=planter.json, expect_status=202,
    )  # fmt: skip
    findings.card_events[body["event_id"]] = "maestro"
    created = planter.send(
        "signing secret", "POST", "/v1/settings/signing-secret", headers=planter.json,
        expect_status=201,
    )  # fmt: skip
    signed = card_free_event(card=_vault_card(PANS["discover"]), amount=99_000, currency="EUR")
    fields = MoneyFields(
        signed["event_id"], PANS["discover"], 99_000, "EUR", signed["merchant_id_hash"]
    )
    signed["signature"] = sign_transaction(created.json()["signing_secret"], fields)
    planter.send(
        "signed card event", "POST", "/v1/events", json=signed, headers=planter.json,
        expect_status=202,
    )  # fmt: skip
    findings.card_events[signed["event_id"]] = "discover"
    _refuse_in_vault(planter)
    for name, token in tokens.items():
        planter.send(
            f"describe {name}", "GET", f"/v1/tokens/{token}", headers=planter.auth,
            expect_status=200,
        )  # fmt: skip
        planter.send(
            f"detokenize {name}", "POST", "/v1/tokens/detokenize", json={"token": token},
            headers=planter.json, expect_status=200, reveals=PANS[name],
        )  # fmt: skip
    findings.purged = tokens["visa-alt"]
    planter.send(
        "purge", "DELETE", f"/v1/tokens/{findings.purged}", headers=planter.auth,
        expect_status=204,
    )  # fmt: skip


def _refuse_in_vault(planter: Planter) -> None:
    """Planted numbers sent to the vault in ways it must refuse, echoing nothing."""
    visa, amex = PANS["visa"], PANS["amex"]
    year = datetime.now(UTC).year
    vault_refusals: list[tuple[str, dict[str, Any], str]] = [
        ("expired", _vault_card(visa, exp_year=year - 1), "validation_failed"),
        ("month 13", _vault_card(amex, exp_month=13), "validation_failed"),
        ("spaced number", _vault_card(spaced(PANS["jcb"])), "validation_failed"),
        ("dashed number", _vault_card(dashed(PANS["mastercard"])), "validation_failed"),
        ("full-width number", _vault_card(full_width(PANS["diners"])), "validation_failed"),
        ("number too long", _vault_card(visa + visa + visa), "validation_failed"),
        ("number as integer", _vault_card(int(visa)), "validation_failed"),
        ("cvv", _vault_card(visa, cvv=SAD_MARKERS[0]), "sensitive_authentication_data"),
        ("pan in a note", _vault_card(visa, note=amex), "pan_detected"),
    ]
    for label, body, code in vault_refusals:
        planter.send(
            f"tokenize refused: {label}", "POST", "/v1/tokens", json=body,
            headers=planter.json, expect_status=422, expect_code=code,
        )  # fmt: skip
    planter.send(
        "detokenize a pan", "POST", "/v1/tokens/detokenize", json={"token": visa},
        headers=planter.json, expect_status=422, expect_code="pan_detected",
    )  # fmt: skip
    good = [card_free_event(card=_vault_card(PANS[name])) for name in ("visa", "jcb")]
    broken = card_free_event(card=_vault_card(visa[:-1] + str((int(visa[-1]) + 1) % 10)))
    planter.findings.refused_valid_ids.extend(e["event_id"] for e in good)
    planter.ingest(
        "card batch with an invalid card", {"events": [good[0], broken, good[1]]},
        code="validation_failed",
    )  # fmt: skip
    event_refusals: list[tuple[str, dict[str, Any], str]] = [
        (
            "token and number",
            {**_vault_card(amex), "token": "tok_" + "A" * 24},
            "validation_failed",
        ),
        ("cvc in card", _vault_card(amex, cvc=SAD_MARKERS[0]), "sensitive_authentication_data"),
        ("pan as token", {"token": amex}, "pan_detected"),
    ]
    for label, body, code in event_refusals:
        event = card_free_event(card=body)
        planter.findings.refused_valid_ids.append(event["event_id"])
        planter.ingest(f"card event refused: {label}", event, code=code)
    event = card_free_event(card=_vault_card(visa), metadata={"previous": amex})
    planter.findings.refused_valid_ids.append(event["event_id"])
    planter.ingest("card event with a pan elsewhere", event)


class RecordingRelay:
    """A TCP relay on loopback to ``host:port`` that keeps every byte, both ways."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.captured = bytearray()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                thread = threading.Thread(target=self._pump, args=(source, sink), daemon=True)
                self._threads.append(thread)
                thread.start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                with self._lock:
                    self.captured += data
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        # Shutting a socket down wakes a thread blocked on it; closing alone may not.
        for sock in [self._listener, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(5)
        for sock in [self._listener, *self._sockets]:
            sock.close()


_KEY_LINE = re.compile(r"^\s+(\S{16,})\s*$", re.MULTILINE)


@pytest.fixture(scope="module", params=["local", "openbao"])
def findings(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Findings]:
    base = tmp_path_factory.mktemp("cards")
    data_dir = base / "data"
    result = Findings(kms=request.param)
    with contextlib.ExitStack() as stack:
        env = dict(UNTHROTTLED_ENV)
        if result.kms == "openbao":
            server = stack.enter_context(openbao_server(base / "openbao", stop_timeout=0.5))
            host, port = server.host_port.rsplit(":", 1)
            relay = RecordingRelay(host, int(port))
            stack.callback(relay.close)
            env["STRONGROOM_KMS_URL"] = (
                f"vault://127.0.0.1:{relay.port}/transit/keys/{new_key_name()}"
            )
            env["STRONGROOM_VAULT_TOKEN"] = server.token
            # No data-key cache: every seal and open unwraps through Transit, so the
            # relay sees as much of the gateway's key traffic as there can be.
            env["STRONGROOM_DATA_KEY_CACHE_SECONDS"] = "0"
            env["STRONGROOM_KMS_TIMEOUT_SECONDS"] = "10"
        _plant_and_collect(data_dir, env, result)
        if result.kms == "openbao":
            result.kms_files = {
                "openbao output": server.output().encode(),
                "relayed traffic": bytes(relay.captured),
            }
        yield result


def _plant_and_collect(data_dir: Path, env: dict[str, str], result: Findings) -> None:
    """Run one gateway through every planting; fill ``result``; stop it."""
    # No configured keys: the bootstrap platform admin key reaches every endpoint.
    gateway = GatewayProcess(data_dir, env, unset=["STRONGROOM_API_KEYS"])
    try:
        gateway.start()
        (key,) = _KEY_LINE.findall(gateway.stdout())
        with gateway.client() as client:
            planter = Planter(client, result, key)
            for _ in range(5):
                planter.valid_event()
            # Legitimate consumers, so consumer-group state is on disk too.
            response = client.post(
                f"/v1/streams/{TOPIC}/groups/analytics/read",
                json={"consumer": "worker-a", "limit": 3},
                headers=planter.json,
            )
            assert response.status_code == 200, response.text
            _plant_in_events(planter)
            _plant_sad(planter)
            _plant_in_headers(planter)
            _plant_in_urls(planter)
            _plant_in_consumers(planter)
            _plant_in_admin(planter)
            _plant_in_vault(planter)
            planter.valid_event()
            records = read_topic_http(client, headers=planter.auth)
            result.stored_ids = [r["record"]["event_id"] for r in records]
            result.tokenized = records
            result.raw = read_topic_http(client, "payments.raw", headers=planter.auth)
        result.files_running = stored_contents(data_dir)
        gateway.stop()
        result.files_stopped = stored_contents(data_dir)
        result.output = gateway.output()
    finally:
        gateway.ensure_stopped()


def test_the_store_is_not_empty_and_holds_every_valid_event(findings: Findings) -> None:
    assert len(findings.valid_ids) >= 20
    assert set(findings.valid_ids) <= set(findings.stored_ids)
    assert not set(findings.refused_valid_ids) & set(findings.stored_ids), (
        "a refused batch was partly stored"
    )
    # The scans saw the store while it was running: its write-ahead log, or its tables.
    live = "database:" if on_postgres() else "-wal"
    assert any(live in name for name in findings.files_running)


def _as_expected(exchange: Exchange) -> bool:
    expected = exchange.expect_status
    if expected is None:
        return True
    statuses = expected if isinstance(expected, tuple) else (expected,)
    if exchange.status not in statuses:
        return False
    return exchange.expect_code is None or exchange.code == exchange.expect_code


def test_card_data_is_refused_with_422_wherever_it_is_sent(findings: Findings) -> None:
    refused = [e for e in findings.exchanges if e.expect_status == 422]
    assert len(refused) >= 200
    wrong = [(e.label, e.status, e.code) for e in findings.exchanges if not _as_expected(e)]
    assert not wrong, wrong


def test_bad_input_is_never_a_500(findings: Findings) -> None:
    failures = [(e.label, e.status) for e in findings.exchanges if e.status >= 500]
    assert not failures, failures


def test_planted_request_ids_are_replaced(findings: Findings) -> None:
    for exchange in findings.exchanges:
        if exchange.offered_request_id is not None:
            assert exchange.request_id
            assert exchange.request_id != exchange.offered_request_id
            assert not leaked_pans(exchange.request_id)


def test_the_vault_holds_every_planted_card_sealed_and_tokenized(findings: Findings) -> None:
    assert set(findings.tokens) == set(PANS)
    stored = {r["record"]["event_id"]: r["record"] for r in findings.tokenized}
    for event_id, name in findings.card_events.items():
        card = stored[event_id]["card"]
        assert card["token"] == findings.tokens[name], name
        assert card["last4"] == PANS[name][-4:]
        assert "number" not in card
    assert [r.get("signature_verified") for r in stored.values() if "signature_verified" in r] == [
        True
    ]
    raw_ids = [r["record"]["event_id"] for r in findings.raw]
    assert sorted(raw_ids) == sorted(findings.card_events), "raw holds other events"
    assert all(r["record"]["sealed"].startswith("sr1:") for r in findings.raw)
    assert not set(findings.refused_valid_ids) & set(raw_ids)
    # The vault's rows were written where the scans look.
    everything = b"".join(findings.files_stopped.values())
    for token in findings.tokens.values():
        if token != findings.purged:
            assert token.encode() in everything, token
    assert ("kek.keyring" in findings.files_running) == (findings.kms == "local")


def test_only_detokenize_responses_show_a_number_and_each_its_own(findings: Findings) -> None:
    revealing = [e for e in findings.exchanges if e.reveals is not None]
    assert len(revealing) == len(PANS)
    for exchange in revealing:
        assert exchange.status == 200, exchange.label
        assert leaked_pans(exchange.text) == [exchange.reveals], exchange.label


def test_no_response_contains_a_planted_pan(findings: Findings) -> None:
    leaks = [
        (e.label, e.status, leaked_pans(e.text)) for e in findings.exchanges if e.reveals is None
    ]
    leaks = [leak for leak in leaks if leak[2]]
    assert not leaks, f"{len(leaks)} responses echo card numbers: {leaks[:10]}"
    markers = [(e.label, m) for e in findings.exchanges for m in SAD_MARKERS if m in e.text]
    assert not markers, markers


def test_server_output_contains_no_card_data(findings: Findings) -> None:
    output = findings.output
    assert "gateway_started" in output
    leaked = leaked_pans(output)
    assert not leaked, f"the server's output holds card numbers: {leaked}"
    assert not [form for form in planted_forms() if form.decode() in output]
    spans = planted_spans(output)
    assert not spans, spans[:5]


def _scan(files: dict[str, bytes]) -> list[str]:
    problems = []
    forms = planted_forms()
    for name, content in files.items():
        problems.extend(f"{name}: holds {form!r}" for form in forms if form in content)
        text = content.decode("utf-8", errors="ignore")
        problems.extend(f"{name}: card number in {span!r}" for span in planted_spans(text))
    return problems


def test_no_file_in_the_data_dir_holds_card_data_while_running(findings: Findings) -> None:
    assert findings.files_running
    problems = _scan(findings.files_running)
    assert not problems, problems[:10]


def test_no_file_in_the_data_dir_holds_card_data_after_stop(findings: Findings) -> None:
    assert findings.files_stopped
    problems = _scan(findings.files_stopped)
    assert not problems, problems[:10]


def test_the_key_manager_never_sees_card_data(findings: Findings) -> None:
    if findings.kms == "local":
        pytest.skip("the local keyring lives in the data dir, which is scanned above")
    traffic = findings.kms_files["relayed traffic"]
    # The relay saw the gateway's Transit calls: data keys made and unwrapped.
    assert b"POST /v1/transit/datakey/" in traffic
    assert b"POST /v1/transit/decrypt/" in traffic
    assert b"OpenBao server started" in findings.kms_files["openbao output"]
    problems = _scan(findings.kms_files)
    assert not problems, problems[:10]
