"""Events that carry a card, and transaction signatures, over ``POST /v1/events``.

1. A card number in ``card`` is tokenized before anything is stored: the record on
   ``payments.tokenized`` carries ``card`` as ``{token, last4, brand, exp_month,
   exp_year}`` (the token ``POST /v1/tokens`` gives for the card) and never the number;
   the original event is sealed (``sr1:``) on ``payments.raw``.
2. One bad card refuses the whole batch, naming ``events[i].card...``; nothing reaches
   either topic and no card is vaulted. A card with both token and number, or an
   unknown token, is 422.
3. Replaying an event is a duplicate: still one record on each topic.
4. Signatures (HMAC-SHA256 over the money fields, docs/formats.md): above the tenant's
   threshold a missing one is ``signature_required``; a wrong one, or one over changed
   money fields, is ``signature_invalid``; a good one is recorded as
   ``signature_verified: true``. The requirement holds for every event above the
   threshold, with or without a card. The format is pinned by a second implementation.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any, Final

import httpx
import pytest
from card_vault_support import (
    CARDS,
    RAW,
    TOKENIZED,
    Admin,
    VaultGateway,
    assert_echoes_no_digits_of,
    card,
    field_errors,
    luhn_broken,
    valid_expiry,
)

from strongroom.crypto.transaction_signing import MoneyFields, sign_transaction
from strongroom.domain.cards import contains_pan
from support import card_free_event
from support_problems import assert_problem

THRESHOLD: Final = 10_000


def card_event(
    number: str | None = None, *, token: str | None = None, **fields: Any
) -> dict[str, Any]:
    """A card-free event carrying ``card`` (a number with a valid expiry, or a token)."""
    if token is not None:
        return card_free_event(card={"token": token}, **fields)
    return card_free_event(card=card(number or CARDS["visa"]), **fields)


async def post(vault: VaultGateway, admin: Admin, body: Any) -> httpx.Response:
    return await vault.http.post("/v1/events", json=body, headers=admin.headers)


async def accepted(vault: VaultGateway, admin: Admin, body: Any) -> list[str]:
    response = await post(vault, admin, body)
    assert response.status_code == 202, response.text
    ids: list[str] = response.json()["accepted"]
    return ids


async def records(vault: VaultGateway, admin: Admin, topic: str) -> dict[str, dict[str, Any]]:
    """The topic's records by event id."""
    return {r["record"]["event_id"]: r for r in await vault.topic(admin.headers, topic)}


async def assert_nothing_stored(vault: VaultGateway, admin: Admin) -> None:
    assert await vault.topic(admin.headers, TOKENIZED) == []
    assert await vault.topic(admin.headers, RAW) == []


def pan_free(value: Any) -> str:
    """``value`` as JSON text, after checking it holds nothing card-shaped."""
    text = json.dumps(value)
    assert not contains_pan(text), text
    return text


# -- tokenizing in events -----------------------------------------------------------------


async def test_a_card_in_an_event_is_replaced_by_its_token(vault: VaultGateway) -> None:
    admin = await vault.admin()
    number = CARDS["mastercard"]
    month, year = valid_expiry()
    sent = card_event(number, amount=2500, currency="EUR")

    await accepted(vault, admin, sent)

    (record,) = (await records(vault, admin, TOKENIZED)).values()
    stored = record["record"]
    same_card = await vault.http.post("/v1/tokens", json=card(number), headers=admin.headers)
    assert same_card.status_code == 200, "the event's card was not vaulted"
    assert stored["card"] == {
        "token": same_card.json()["token"],
        "last4": "4444",
        "brand": "mastercard",
        "exp_month": month,
        "exp_year": year,
    }
    assert {k: v for k, v in stored.items() if k != "card"} == {
        k: v for k, v in sent.items() if k != "card"
    }
    assert "signature_verified" not in stored
    pan_free(record)


async def test_a_batch_of_cards_is_tokenized_and_no_number_reaches_the_stream(
    vault: VaultGateway,
) -> None:
    admin = await vault.admin()
    numbers = [CARDS["visa"], CARDS["amex"], CARDS["visa"], CARDS["unionpay"]]
    events = [card_event(number) for number in numbers]
    plain = card_free_event()

    ids = await accepted(vault, admin, {"events": [*events, plain]})

    assert ids == [e["event_id"] for e in [*events, plain]]
    tokenized = await records(vault, admin, TOKENIZED)
    tokens = [tokenized[e["event_id"]]["record"]["card"]["token"] for e in events]
    assert tokens[0] == tokens[2], "the same card got two tokens in one batch"
    assert len(set(tokens)) == 3
    for event, number in zip(events, numbers, strict=True):
        shown = tokenized[event["event_id"]]["record"]["card"]
        vaulted = await vault.tokenize(admin.headers, number)
        assert (shown["token"], shown["last4"], shown["brand"]) == (
            vaulted["token"],
            number[-4:],
            vaulted["brand"],
        )
    assert "card" not in tokenized[plain["event_id"]]["record"]
    text = pan_free(list(tokenized.values()))
    for number in numbers:
        assert number not in text
        assert number[:6] not in text


async def test_the_original_event_is_sealed_on_the_raw_topic(vault: VaultGateway) -> None:
    admin = await vault.admin()
    with_card = [card_event(CARDS["discover"]), card_event(CARDS["jcb"])]
    plain = card_free_event()

    await accepted(vault, admin, {"events": [with_card[0], plain, with_card[1]]})

    raw = await records(vault, admin, RAW)
    assert set(raw) == {e["event_id"] for e in with_card}, "only events with a card go raw"
    for event in with_card:
        record = raw[event["event_id"]]["record"]
        assert set(record) == {"event_id", "sealed"}
        assert record["sealed"].startswith("sr1:")
    text = pan_free(list(raw.values()))
    for number in (CARDS["discover"], CARDS["jcb"]):
        assert number not in text
    assert with_card[0]["payment_intent_id_hash"] not in text, "the original is not sealed"


async def test_an_event_may_carry_a_token_instead_of_a_number(vault: VaultGateway) -> None:
    admin = await vault.admin()
    number = CARDS["maestro"]
    vaulted = await vault.tokenize(admin.headers, number, exp_month=4)
    event = card_event(token=vaulted["token"])

    await accepted(vault, admin, event)

    stored = (await records(vault, admin, TOKENIZED))[event["event_id"]]["record"]
    assert stored["card"] == {
        "token": vaulted["token"],
        "last4": number[-4:],
        "brand": "maestro",
        "exp_month": 4,
        "exp_year": vaulted["exp_year"],
    }
    raw = await records(vault, admin, RAW)
    assert set(raw) == {event["event_id"]}


async def test_the_payflux_route_tokenizes_a_card_too(vault: VaultGateway) -> None:
    admin = await vault.admin()
    event = card_event(CARDS["diners"])

    response = await vault.http.post(
        "/v1/events/payment_exhaust", json=event, headers=admin.headers
    )

    assert response.status_code == 202, response.text
    stored = (await records(vault, admin, TOKENIZED))[event["event_id"]]
    assert stored["record"]["card"]["last4"] == CARDS["diners"][-4:]
    pan_free(stored)
    assert set(await records(vault, admin, RAW)) == {event["event_id"]}


# -- refusals -------------------------------------------------------------------------------


async def test_one_invalid_card_refuses_the_whole_batch_and_stores_nothing(
    vault: VaultGateway,
) -> None:
    admin = await vault.admin()
    bad = luhn_broken(CARDS["visa"])
    events = [card_event(CARDS["amex"]), card_event(bad), card_event(CARDS["jcb"])]

    response = await post(vault, admin, {"events": events})

    problem = assert_problem(response, 422, "validation_failed")
    assert [name for name, _ in field_errors(problem)] == ["events[1].card.number"]
    for number in (CARDS["amex"], bad, CARDS["jcb"]):
        assert_echoes_no_digits_of(response, number)
    await assert_nothing_stored(vault, admin)
    for number in (CARDS["amex"], CARDS["jcb"]):
        again = await vault.http.post("/v1/tokens", json=card(number), headers=admin.headers)
        assert again.status_code == 201, "a card of the refused batch was vaulted"


async def test_every_bad_card_of_a_batch_is_named_at_once(vault: VaultGateway) -> None:
    admin = await vault.admin()
    events = [
        card_free_event(card=card(CARDS["visa"], exp_month=13)),
        card_event(CARDS["mastercard"]),
        card_event(token="tok_" + "Z" * 24),
    ]

    response = await post(vault, admin, {"events": events})

    problem = assert_problem(response, 422, "validation_failed")
    assert sorted(name for name, _ in field_errors(problem)) == [
        "events[0].card.exp_month",
        "events[2].card.token",
    ]
    await assert_nothing_stored(vault, admin)


async def test_a_card_with_both_a_token_and_a_number_is_refused(vault: VaultGateway) -> None:
    admin = await vault.admin()
    number = CARDS["visa"]
    token = (await vault.tokenize(admin.headers, number))["token"]
    event = card_free_event(card={**card(number), "token": token})

    response = await post(vault, admin, event)

    problem = assert_problem(response, 422, "validation_failed")
    assert [name for name, _ in field_errors(problem)] == ["card"]
    assert_echoes_no_digits_of(response, number)
    assert token not in response.text
    await assert_nothing_stored(vault, admin)


@pytest.mark.parametrize(
    "body",
    [{"number": CARDS["visa"]}, {"exp_month": 1, "exp_year": 2040}, {}],
    ids=["number without expiry", "expiry without number", "empty"],
)
async def test_an_incomplete_card_is_refused(vault: VaultGateway, body: dict[str, Any]) -> None:
    admin = await vault.admin()

    response = await post(vault, admin, card_free_event(card=body))

    problem = assert_problem(response, 422, "validation_failed")
    assert [name for name, _ in field_errors(problem)] == ["card"]
    assert_echoes_no_digits_of(response, CARDS["visa"])
    await assert_nothing_stored(vault, admin)


async def test_an_unknown_token_or_another_tenants_token_is_refused(vault: VaultGateway) -> None:
    admin, neighbour = await vault.admin(), await vault.admin()
    theirs = (await vault.tokenize(neighbour.headers, CARDS["visa"]))["token"]

    for token in ("tok_" + "Q" * 24, theirs, "not-a-token"):
        response = await post(vault, admin, card_event(token=token))
        problem = assert_problem(response, 422, "validation_failed")
        assert field_errors(problem) == [("card.token", "unknown token")]
        assert token not in response.text
    await assert_nothing_stored(vault, admin)


async def test_a_security_code_in_a_card_is_refused_and_nothing_stored(
    vault: VaultGateway,
) -> None:
    admin = await vault.admin()
    number = CARDS["visa"]
    event = card_free_event(card=card(number, cvc="737"))

    response = await post(vault, admin, {"events": [card_free_event(), event]})

    problem = assert_problem(response, 422, "sensitive_authentication_data")
    assert [name for name, _ in field_errors(problem)] == ["events[1].card.cvc"]
    assert_echoes_no_digits_of(response, number)
    await assert_nothing_stored(vault, admin)
    accepted_card = await vault.http.post("/v1/tokens", json=card(number), headers=admin.headers)
    assert accepted_card.status_code == 201


async def test_a_card_number_outside_card_number_is_pan_detected(vault: VaultGateway) -> None:
    admin = await vault.admin()
    event = card_event(CARDS["visa"], metadata={"previous_card": CARDS["amex"]})

    response = await post(vault, admin, event)

    problem = assert_problem(response, 422, "pan_detected")
    assert [name for name, _ in field_errors(problem)] == ["metadata.previous_card"]
    for number in (CARDS["visa"], CARDS["amex"]):
        assert_echoes_no_digits_of(response, number)
    await assert_nothing_stored(vault, admin)


async def test_an_oversized_card_event_is_refused_without_vaulting_its_card(
    make_vault: Any,
) -> None:
    async with make_vault(max_event_bytes=1024) as vault:
        admin = await vault.admin()
        number = CARDS["discover"]
        event = card_event(number, metadata={f"k{i}": "x" * 100 for i in range(10)})

        response = await post(vault, admin, event)

        assert_problem(response, 413, "payload_too_large")
        await assert_nothing_stored(vault, admin)
        again = await vault.http.post("/v1/tokens", json=card(number), headers=admin.headers)
        assert again.status_code == 201, "the refused event's card was vaulted anyway"


# -- idempotency ----------------------------------------------------------------------------


async def test_replaying_a_card_event_is_a_duplicate_with_one_record_per_topic(
    vault: VaultGateway,
) -> None:
    admin = await vault.admin()
    event = card_event(CARDS["visa"])
    batch = [card_event(CARDS["amex"]), card_event(CARDS["jcb"])]

    first = await post(vault, admin, event)
    again = await post(vault, admin, event)
    await accepted(vault, admin, {"events": batch})
    replayed = await post(vault, admin, {"events": [*batch, event]})

    assert first.json() == {"accepted": [event["event_id"]], "duplicates": []}
    assert again.status_code == 202, again.text
    assert again.json() == {"accepted": [], "duplicates": [event["event_id"]]}
    assert replayed.json()["accepted"] == []
    assert sorted(replayed.json()["duplicates"]) == sorted(e["event_id"] for e in [*batch, event])
    for topic in (TOKENIZED, RAW):
        listed = await vault.topic(admin.headers, topic)
        assert len(listed) == 3, (topic, listed)
        assert {r["record"]["event_id"] for r in listed} == {e["event_id"] for e in [*batch, event]}


# -- signatures -----------------------------------------------------------------------------


_SHORT_ESCAPES: Final = {"\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _json_string(text: str) -> str:
    """A JSON string literal (RFC 8259 section 7): quote and backslash escaped, control
    characters by their two-character escape where there is one, every other control
    character, DEL and non-ASCII character as lowercase ``\\uXXXX`` (UTF-16 surrogates
    beyond the BMP), as Python's ``json.dumps`` writes them."""
    out = ['"']
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif char in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[char])
        elif code < 0x20 or code > 0x7E:
            encoded = char.encode("utf-16-be")
            out.extend(
                f"\\u{int.from_bytes(encoded[i : i + 2], 'big'):04x}"
                for i in range(0, len(encoded), 2)
            )
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def independent_signature(
    secret: str, *, transaction_id: str, card: str, amount: int, currency: str, merchant: str
) -> str:
    """The signature as docs/formats.md describes it, without the product's code."""
    members = [
        ("amount", str(amount)),
        ("card", _json_string(card)),
        ("currency", _json_string(currency)),
        ("merchant", _json_string(merchant)),
        ("transaction_id", _json_string(transaction_id)),
    ]
    body = "{" + ",".join(f'"{name}":{value}' for name, value in members) + "}"
    message = b"strongroom-transaction-v1\n" + body.encode("ascii")
    return "v1=" + hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def signed(secret: str, event: dict[str, Any], **tamper: Any) -> dict[str, Any]:
    """``event`` with a signature over its money fields, then ``tamper`` applied."""
    sent_card = event.get("card") or {}
    signature = independent_signature(
        secret,
        transaction_id=event["event_id"],
        card=sent_card.get("token") or sent_card.get("number") or "",
        amount=event.get("amount", 0),
        currency=event.get("currency", ""),
        merchant=event.get("merchant_id_hash", ""),
    )
    return {**event, "signature": signature, **tamper}


async def signing_tenant(
    vault: VaultGateway, threshold: int | None = THRESHOLD
) -> tuple[Admin, str]:
    admin = await vault.admin()
    if threshold is not None:
        changed = await vault.http.patch(
            "/v1/settings", json={"signature_required_above": threshold}, headers=admin.headers
        )
        assert changed.json()["signature_required_above"] == threshold, changed.text
    created = await vault.http.post("/v1/settings/signing-secret", headers=admin.headers)
    assert created.status_code == 201, created.text
    assert set(created.json()) == {"signing_secret"}
    secret: str = created.json()["signing_secret"]
    return admin, secret


KNOWN_ANSWER: Final = (
    "srsig_known-answer-test-secret-0001",
    MoneyFields(
        transaction_id="0b7e2a1c-3f4d-4e5a-9b6c-7d8e9f0a1b2c",
        card="tok_AbCdEfGhIjKlMnOpQrStUvWx",
        amount=125000,
        currency="EUR",
        merchant="m_caf\u00e9",
    ),
    "v1=57d3b5f953b214909914fd157d1b901337eda43a5aa6b0f1e24bfc8996742563",
)


def test_the_signature_format_matches_a_known_answer_and_a_second_implementation() -> None:
    secret, fields, expected = KNOWN_ANSWER
    ours = independent_signature(
        secret,
        transaction_id=fields.transaction_id,
        card=fields.card,
        amount=fields.amount,
        currency=fields.currency,
        merchant=fields.merchant,
    )

    assert ours == expected
    assert sign_transaction(secret, fields) == expected


@pytest.mark.parametrize(
    "fields",
    [
        MoneyFields("id-1", "4111111111111111", 0, "", ""),
        MoneyFields("id-2", "tok_" + "a" * 24, 10**15, "JPY", 'm_"quoted"\\slash'),
        MoneyFields("id-3", "", 1, "USD", "m_\u00fc\u20ac\U0001f4b3"),
        MoneyFields("id-4", "", 1, "USD", "m_\n\t\x01\x1f\x7f"),
    ],
    ids=["number and empty fields", "escapes", "non-ASCII", "control characters"],
)
def test_the_product_signs_exactly_as_documented(fields: MoneyFields) -> None:
    secret = "srsig_second-implementation"
    expected = independent_signature(
        secret,
        transaction_id=fields.transaction_id,
        card=fields.card,
        amount=fields.amount,
        currency=fields.currency,
        merchant=fields.merchant,
    )

    assert sign_transaction(secret, fields) == expected


async def test_above_the_threshold_an_unsigned_event_is_signature_required(
    vault: VaultGateway,
) -> None:
    admin, _ = await signing_tenant(vault)
    event = card_event(CARDS["visa"], amount=THRESHOLD + 1, currency="EUR")

    response = await post(vault, admin, event)

    problem = assert_problem(response, 422, "signature_required")
    assert [name for name, _ in field_errors(problem)] == ["signature"]
    assert_echoes_no_digits_of(response, CARDS["visa"])
    await assert_nothing_stored(vault, admin)


async def test_a_valid_signature_is_accepted_and_recorded_as_verified(
    vault: VaultGateway,
) -> None:
    admin, secret = await signing_tenant(vault)
    event = signed(secret, card_event(CARDS["amex"], amount=THRESHOLD * 5, currency="USD"))
    product = sign_transaction(
        secret,
        MoneyFields(
            transaction_id=event["event_id"],
            card=CARDS["amex"],
            amount=event["amount"],
            currency="USD",
            merchant=event["merchant_id_hash"],
        ),
    )
    assert event["signature"] == product

    await accepted(vault, admin, event)

    stored = (await records(vault, admin, TOKENIZED))[event["event_id"]]["record"]
    assert stored["signature_verified"] is True
    assert "signature" not in stored
    assert event["signature"] not in json.dumps(stored)


@pytest.mark.parametrize(
    "tamper",
    [
        {"amount": THRESHOLD * 5 + 1},
        {"amount": 1},
        {"merchant_id_hash": "m_another_merchant"},
        {"currency": "GBP"},
        {"event_id": "5f0c3a52-43e4-4b8e-9a5f-3d0f3bb1b0a1"},
        {"card": card(CARDS["visa"])},
    ],
    ids=["amount raised", "amount lowered", "merchant", "currency", "event id", "card"],
)
async def test_changing_a_money_field_after_signing_is_signature_invalid(
    vault: VaultGateway, tamper: dict[str, Any]
) -> None:
    admin, secret = await signing_tenant(vault)
    event = signed(secret, card_event(CARDS["jcb"], amount=THRESHOLD * 5, currency="EUR"), **tamper)

    response = await post(vault, admin, event)

    problem = assert_problem(response, 422, "signature_invalid")
    assert [name for name, _ in field_errors(problem)] == ["signature"]
    assert event["signature"] not in response.text
    await assert_nothing_stored(vault, admin)


async def test_below_or_at_the_threshold_no_signature_is_needed(vault: VaultGateway) -> None:
    admin, _ = await signing_tenant(vault)
    events = [
        card_event(CARDS["visa"], amount=THRESHOLD, currency="EUR"),
        card_event(CARDS["visa"], amount=1, currency="EUR"),
        card_event(CARDS["visa"]),
    ]

    await accepted(vault, admin, {"events": events})

    for record in (await records(vault, admin, TOKENIZED)).values():
        assert "signature_verified" not in record["record"]


async def test_a_wrong_signature_is_refused_even_below_the_threshold(vault: VaultGateway) -> None:
    admin, _ = await signing_tenant(vault)
    wrong_secret = signed("srsig_not-the-tenants", card_event(CARDS["visa"], amount=5))
    malformed = {**card_event(CARDS["visa"], amount=5), "signature": "v1=" + "0" * 64}

    for event in (wrong_secret, malformed):
        response = await post(vault, admin, event)
        assert_problem(response, 422, "signature_invalid")
    await assert_nothing_stored(vault, admin)


async def test_a_signature_covers_a_token_or_no_card_at_all(vault: VaultGateway) -> None:
    admin, secret = await signing_tenant(vault)
    token = (await vault.tokenize(admin.headers, CARDS["visa"]))["token"]
    with_token = signed(secret, card_event(token=token, amount=THRESHOLD * 2, currency="EUR"))
    without_card = signed(secret, card_free_event(amount=THRESHOLD * 3, currency="EUR"))
    over_token = signed(secret, card_event(token=token, amount=THRESHOLD * 2, currency="EUR"))

    await accepted(vault, admin, {"events": [with_token, without_card]})
    refused = await post(vault, admin, {**over_token, "card": card(CARDS["visa"])})

    stored = await records(vault, admin, TOKENIZED)
    assert stored[with_token["event_id"]]["record"]["signature_verified"] is True
    assert stored[with_token["event_id"]]["record"]["card"]["token"] == token
    assert stored[without_card["event_id"]]["record"]["signature_verified"] is True
    assert "card" not in stored[without_card["event_id"]]["record"]
    # A signature over the token does not hold for the number behind it.
    assert_problem(refused, 422, "signature_invalid")


async def test_an_unsigned_event_in_a_batch_is_named_and_refuses_the_batch(
    vault: VaultGateway,
) -> None:
    admin, secret = await signing_tenant(vault)
    good = signed(secret, card_event(CARDS["visa"], amount=THRESHOLD * 2, currency="EUR"))
    unsigned = card_event(CARDS["amex"], amount=THRESHOLD * 2, currency="EUR")

    response = await post(vault, admin, {"events": [good, unsigned]})

    problem = assert_problem(response, 422, "signature_required")
    assert [name for name, _ in field_errors(problem)] == ["events[1].signature"]
    await assert_nothing_stored(vault, admin)


@pytest.mark.parametrize(
    "with_a_card_event",
    [
        pytest.param(
            False,
            id="alone",
        ),
        pytest.param(True, id="batched with a card event"),
    ],
)
async def test_an_unsigned_event_without_a_card_above_the_threshold_is_refused(
    vault: VaultGateway, with_a_card_event: bool
) -> None:
    admin, _ = await signing_tenant(vault)
    unsigned = card_free_event(amount=THRESHOLD * 3, currency="EUR")
    events = [unsigned, card_event(CARDS["visa"])] if with_a_card_event else [unsigned]

    response = await post(vault, admin, {"events": events})

    problem = assert_problem(response, 422, "signature_required")
    assert [name for name, _ in field_errors(problem)] == ["events[0].signature"]
    await assert_nothing_stored(vault, admin)


async def test_a_new_signing_secret_replaces_the_old_one(vault: VaultGateway) -> None:
    admin, old = await signing_tenant(vault)
    replaced = await vault.http.post("/v1/settings/signing-secret", headers=admin.headers)
    new = replaced.json()["signing_secret"]
    event = card_event(CARDS["visa"], amount=THRESHOLD * 2, currency="EUR")

    stale = await post(vault, admin, signed(old, event))
    fresh = await post(vault, admin, signed(new, event))

    assert new != old
    assert new.startswith("srsig_")
    assert_problem(stale, 422, "signature_invalid")
    assert fresh.status_code == 202, fresh.text
    actions = [r["actor"] for r in await vault.audit(admin.headers, "signing_secret.created")]
    assert actions == [admin.key_id, admin.key_id]
    for record in await vault.audit(admin.headers, "signing_secret.created"):
        assert old not in json.dumps(record)
        assert new not in json.dumps(record)


async def test_without_a_secret_every_signature_is_invalid(vault: VaultGateway) -> None:
    admin = await vault.admin()
    event = signed("srsig_guessed", card_event(CARDS["visa"], amount=10))

    response = await post(vault, admin, event)

    assert_problem(response, 422, "signature_invalid")
    await assert_nothing_stored(vault, admin)


async def test_clearing_the_requirement_accepts_unsigned_events_again(
    vault: VaultGateway,
) -> None:
    admin, _ = await signing_tenant(vault)
    event = card_event(CARDS["visa"], amount=THRESHOLD * 10, currency="EUR")
    assert_problem(await post(vault, admin, event), 422, "signature_required")

    cleared = await vault.http.patch(
        "/v1/settings", json={"clear_signature_requirement": True}, headers=admin.headers
    )

    assert cleared.json()["signature_required_above"] is None
    await accepted(vault, admin, event)
