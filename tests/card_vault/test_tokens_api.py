"""The token vault over HTTP: ``/v1/tokens``, detokenizing, purging and ``/v1/settings``.

1. A new card is 201, the same card again 200 with the same token and fingerprint; a
   token is ``tok_`` + 24 base62 characters and never holds the number.
2. Tenants never share a token or a fingerprint, nor see each other's tokens (404).
3. Every validation rule is a 422 naming its field; no response holds four digits in a
   row of the number sent. A security code, or a number in any other field, is refused
   and nothing is stored.
4. Detokenizing needs ``tokens:detokenize``, is audited without the number, and has its
   own per-key rate limit (429 with Retry-After).
5. Purging deletes the token (204, then 404) and is audited.
6. ``expose_bin`` (``PATCH /v1/settings``) shows or hides the first six digits.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest
from card_vault_support import (
    CARDS,
    FINGERPRINT_PATTERN,
    TOKEN_PATTERN,
    VaultGateway,
    assert_echoes_no_digits_of,
    card,
    field_errors,
    luhn_broken,
    today,
    valid_expiry,
    with_check_digit,
)

from strongroom.domain.cards import contains_pan
from support import KEY, bearer
from support_problems import assert_problem

OPERATOR = bearer(KEY)


# -- tokenizing -------------------------------------------------------------------------


async def test_a_new_card_is_201_and_the_same_card_again_200_with_the_same_token(
    vault: VaultGateway,
) -> None:
    month, year = valid_expiry()
    first = await vault.http.post("/v1/tokens", json=card(CARDS["visa"]), headers=OPERATOR)
    again = await vault.http.post("/v1/tokens", json=card(CARDS["visa"]), headers=OPERATOR)

    assert first.status_code == 201, first.text
    assert again.status_code == 200, again.text
    body = first.json()
    assert set(body) == {"token", "last4", "brand", "exp_month", "exp_year", "fingerprint"}
    assert body["last4"] == "1111"
    assert body["brand"] == "visa"
    assert (body["exp_month"], body["exp_year"]) == (month, year)
    assert again.json() == body


@pytest.mark.parametrize("brand", sorted(CARDS))
async def test_a_token_has_the_documented_shape_and_holds_no_card_digits(
    vault: VaultGateway, brand: str
) -> None:
    number = CARDS[brand]
    response = await vault.http.post("/v1/tokens", json=card(number), headers=OPERATOR)

    assert response.status_code == 201, response.text
    body = response.json()
    token = body["token"]
    assert TOKEN_PATTERN.match(token), token
    assert not token[4:].isdigit()
    assert number not in token
    assert not contains_pan(token)
    assert body["brand"] == brand
    assert body["last4"] == number[-4:]
    assert FINGERPRINT_PATTERN.match(body["fingerprint"]), body
    # The fingerprint is keyed: never the plain hash of the number (PCI DSS 3.5.1.1).
    assert body["fingerprint"] not in hashlib.sha256(number.encode()).hexdigest()
    assert number not in response.text
    assert number[:6] not in response.text


async def test_different_cards_get_different_tokens_and_fingerprints(vault: VaultGateway) -> None:
    results = [await vault.tokenize(OPERATOR, number) for number in CARDS.values()]

    assert len({result["token"] for result in results}) == len(CARDS)
    assert len({result["fingerprint"] for result in results}) == len(CARDS)


async def test_tenants_never_share_tokens_fingerprints_or_access(vault: VaultGateway) -> None:
    alpha, beta = await vault.admin(), await vault.admin()
    number = CARDS["mastercard"]

    mine = await vault.tokenize(alpha.headers, number)
    theirs = await vault.tokenize(beta.headers, number)

    assert mine["token"] != theirs["token"]
    assert mine["fingerprint"] != theirs["fingerprint"]
    token = mine["token"]
    unknown = "tok_" + "A" * 24
    refusals = [
        await vault.detokenize(beta.headers, token),
        await vault.http.get(f"/v1/tokens/{token}", headers=beta.headers),
        await vault.http.delete(f"/v1/tokens/{token}", headers=beta.headers),
    ]
    for response in refusals:
        assert_problem(response, 404, "not_found")
        assert number not in response.text
    # Another tenant's token looks exactly like one that does not exist.
    missing = await vault.detokenize(beta.headers, unknown)
    assert_problem(missing, 404, "not_found")
    assert missing.json()["detail"] == refusals[0].json()["detail"]
    # Nothing the other tenant tried touched the token.
    still = await vault.detokenize(alpha.headers, token)
    assert still.status_code == 200, still.text
    assert still.json()["number"] == number


async def test_the_same_card_tokenized_at_once_gets_one_token(vault: VaultGateway) -> None:
    responses = await asyncio.gather(
        *(
            vault.http.post("/v1/tokens", json=card(CARDS["amex"]), headers=OPERATOR)
            for _ in range(10)
        )
    )

    assert sorted(r.status_code for r in responses) == [200] * 9 + [201]
    assert len({r.json()["token"] for r in responses}) == 1


async def test_a_later_expiry_updates_the_token_and_an_earlier_one_does_not(
    vault: VaultGateway,
) -> None:
    year = today().year
    number = CARDS["amex"]
    first = await vault.tokenize(OPERATOR, number, exp_month=6, exp_year=year + 2)
    later = await vault.tokenize(OPERATOR, number, exp_month=3, exp_year=year + 4)
    earlier = await vault.tokenize(OPERATOR, number, exp_month=9, exp_year=year + 1)

    assert first["token"] == later["token"] == earlier["token"]
    assert (later["exp_month"], later["exp_year"]) == (3, year + 4)
    assert (earlier["exp_month"], earlier["exp_year"]) == (3, year + 4)
    described = await vault.http.get(f"/v1/tokens/{first['token']}", headers=OPERATOR)
    assert described.status_code == 200, described.text
    assert (described.json()["exp_month"], described.json()["exp_year"]) == (3, year + 4)


async def test_describing_a_token_shows_its_details_but_never_the_number(
    vault: VaultGateway,
) -> None:
    number = CARDS["discover"]
    token = (await vault.tokenize(OPERATOR, number))["token"]

    response = await vault.http.get(f"/v1/tokens/{token}", headers=OPERATOR)

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"token", "last4", "brand", "exp_month", "exp_year", "created_at"}
    assert (body["token"], body["last4"], body["brand"]) == (token, "1117", "discover")
    assert number not in response.text
    assert number[:6] not in response.text


async def test_a_card_expiring_this_month_is_accepted(vault: VaultGateway) -> None:
    now = today()
    response = await vault.http.post(
        "/v1/tokens",
        json=card(CARDS["jcb"], exp_month=now.month, exp_year=now.year),
        headers=OPERATOR,
    )

    assert response.status_code == 201, response.text


# -- validation ---------------------------------------------------------------------------

#: (label, body, the field named, a fragment of its message or None, the digits sent).
Case = tuple[str, Callable[[], dict[str, Any]], str, str | None, str]


def _cases() -> list[Case]:
    visa = CARDS["visa"]
    unknown_brand = with_check_digit("9" + "4" * 14)
    too_short = with_check_digit("4" + "3" * 9)
    too_long = with_check_digit("4" + "3" * 18)
    amex_16 = with_check_digit("37" + "8" * 13)
    spaced = " ".join(visa[i : i + 4] for i in range(0, 16, 4))
    full_width = "".join(chr(0xFF10 + int(digit)) for digit in visa)
    return [
        ("bad Luhn", lambda: card(luhn_broken(visa)), "number", "check digit", visa),
        ("unknown brand", lambda: card(unknown_brand), "number", "brand", unknown_brand),
        ("too short", lambda: card(too_short), "number", "12 to 19", too_short),
        ("too long", lambda: card(too_long), "number", "12 to 19", too_long),
        ("brand length", lambda: card(amex_16), "number", "American Express", amex_16),
        ("over 32 characters", lambda: card(visa * 3), "number", None, visa),
        ("spaces", lambda: card(spaced), "number", "only the digits", visa),
        ("dashes", lambda: card(spaced.replace(" ", "-")), "number", "only the digits", visa),
        ("full-width digits", lambda: card(full_width), "number", "only the digits", visa),
        ("letters", lambda: card(visa[:8] + "abcdefgh"), "number", "only the digits", visa),
        ("number as integer", lambda: card(int(visa)), "number", None, visa),  # type: ignore[arg-type]
        ("month 13", lambda: card(visa, exp_month=13), "exp_month", "1 to 12", visa),
        ("month 0", lambda: card(visa, exp_month=0), "exp_month", "1 to 12", visa),
        ("month as text", lambda: card(visa, exp_month="12"), "exp_month", None, visa),
        (
            "expired year",
            lambda: card(visa, exp_year=today().year - 1),
            "exp_year",
            "expir",
            visa,
        ),
        ("two-digit year", lambda: card(visa, exp_year=30), "exp_year", "four digits", visa),
        (
            "year too far ahead",
            lambda: card(visa, exp_year=today().year + 51),
            "exp_year",
            "50 years",
            visa,
        ),
        (
            "year missing",
            lambda: {"number": visa, "exp_month": 12},
            "exp_year",
            None,
            visa,
        ),
    ]


@pytest.mark.parametrize(
    ("body", "field", "fragment", "digits"),
    [pytest.param(*case[1:], id=case[0]) for case in _cases()],
)
async def test_each_rule_is_a_422_naming_its_field_without_echoing_digits(
    vault: VaultGateway,
    body: Callable[[], dict[str, Any]],
    field: str,
    fragment: str | None,
    digits: str,
) -> None:
    response = await vault.http.post("/v1/tokens", json=body(), headers=OPERATOR)

    problem = assert_problem(response, 422, "validation_failed")
    errors = field_errors(problem)
    assert [name for name, _ in errors] == [field], errors
    if fragment is not None:
        assert fragment in errors[0][1], errors
    assert_echoes_no_digits_of(response, digits)


async def test_a_card_that_expired_last_month_is_refused_on_the_month(
    vault: VaultGateway,
) -> None:
    now = today()
    if now.month == 1:
        pytest.skip("in January last month's expiry is in last year: the year rule applies")
    response = await vault.http.post(
        "/v1/tokens",
        json=card(CARDS["visa"], exp_month=now.month - 1, exp_year=now.year),
        headers=OPERATOR,
    )

    problem = assert_problem(response, 422, "validation_failed")
    assert [name for name, _ in field_errors(problem)] == ["exp_month"]
    assert "expired" in problem["errors"][0]["message"]
    assert_echoes_no_digits_of(response, CARDS["visa"])


async def test_every_failing_rule_is_reported_at_once(vault: VaultGateway) -> None:
    number = luhn_broken(CARDS["mastercard"])
    response = await vault.http.post(
        "/v1/tokens",
        json={"number": number, "exp_month": 13, "exp_year": today().year - 1},
        headers=OPERATOR,
    )

    problem = assert_problem(response, 422, "validation_failed")
    assert sorted(name for name, _ in field_errors(problem)) == [
        "exp_month",
        "exp_year",
        "number",
    ]
    assert_echoes_no_digits_of(response, number)


async def test_expiry_problems_store_nothing(vault: VaultGateway) -> None:
    number = CARDS["maestro"]
    refused = await vault.http.post(
        "/v1/tokens", json=card(number, exp_year=today().year - 1), headers=OPERATOR
    )
    assert_problem(refused, 422, "validation_failed")

    accepted = await vault.http.post("/v1/tokens", json=card(number), headers=OPERATOR)

    assert accepted.status_code == 201, "the refused card was stored after all"


@pytest.mark.parametrize("name", ["cvv", "cvc", "cvv2", "security_code"])
async def test_a_security_code_is_refused_and_nothing_is_stored(
    vault: VaultGateway, name: str
) -> None:
    number = CARDS["visa"]
    response = await vault.http.post(
        "/v1/tokens", json=card(number, **{name: "737"}), headers=OPERATOR
    )

    problem = assert_problem(response, 422, "sensitive_authentication_data")
    assert [field for field, _ in field_errors(problem)] == [name]
    assert_echoes_no_digits_of(response, number)
    assert "737" not in response.text.replace(response.headers["x-request-id"], "")
    accepted = await vault.http.post("/v1/tokens", json=card(number), headers=OPERATOR)
    assert accepted.status_code == 201, "the card sent with a security code was stored"


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"note": CARDS["mastercard"]}, "note"),
        ({"exp_month": int(CARDS["mastercard"])}, "exp_month"),
        ({"metadata": {"previous": CARDS["amex"]}}, "metadata.previous"),
    ],
    ids=["extra field", "month holding a number", "nested"],
)
async def test_a_card_number_in_any_other_field_is_pan_detected(
    vault: VaultGateway, extra: dict[str, Any], field: str
) -> None:
    number = CARDS["visa"]
    response = await vault.http.post("/v1/tokens", json=card(number, **extra), headers=OPERATOR)

    problem = assert_problem(response, 422, "pan_detected")
    assert [name for name, _ in field_errors(problem)] == [field]
    for planted in (number, CARDS["mastercard"], CARDS["amex"]):
        assert_echoes_no_digits_of(response, planted)
    accepted = await vault.http.post("/v1/tokens", json=card(number), headers=OPERATOR)
    assert accepted.status_code == 201, "the refused request stored its card"


async def test_a_card_number_as_a_token_to_detokenize_is_pan_detected(vault: VaultGateway) -> None:
    admin = await vault.admin()
    response = await vault.detokenize(admin.headers, CARDS["visa"])

    problem = assert_problem(response, 422, "pan_detected")
    assert [name for name, _ in field_errors(problem)] == ["token"]
    assert_echoes_no_digits_of(response, CARDS["visa"])


# -- detokenizing, purging --------------------------------------------------------------


async def test_detokenizing_and_purging_need_the_detokenize_scope(vault: VaultGateway) -> None:
    token = (await vault.tokenize(OPERATOR, CARDS["visa"]))["token"]
    admin = await vault.admin()
    operator = await vault.key(admin.tenant, "operator")
    viewer = await vault.key(admin.tenant, "viewer")

    for headers in (OPERATOR, bearer(operator.secret)):
        for response in (
            await vault.detokenize(headers, token),
            await vault.http.delete(f"/v1/tokens/{token}", headers=headers),
        ):
            problem = assert_problem(response, 403, "forbidden")
            assert "tokens:detokenize" in problem["detail"]
            assert CARDS["visa"] not in response.text
    refused = await vault.http.post(
        "/v1/tokens", json=card(CARDS["visa"]), headers=bearer(viewer.secret)
    )
    assert "tokens:create" in assert_problem(refused, 403, "forbidden")["detail"]
    assert_echoes_no_digits_of(refused, CARDS["visa"])


async def test_an_admin_detokenizes_and_the_audit_record_holds_no_number(
    vault: VaultGateway,
) -> None:
    admin = await vault.admin()
    number = CARDS["mastercard"]
    month, year = valid_expiry()
    token = (await vault.tokenize(admin.headers, number))["token"]

    response = await vault.detokenize(admin.headers, token)

    assert response.status_code == 200, response.text
    assert response.json() == {
        "token": token,
        "number": number,
        "exp_month": month,
        "exp_year": year,
        "brand": "mastercard",
    }
    (record,) = await vault.audit(admin.headers, "token.detokenized")
    assert record["actor"] == admin.key_id
    assert record["tenant"] == admin.tenant.id
    assert record["resource"] == token
    assert record["outcome"] == "success"
    serialized = json.dumps(record)
    assert number not in serialized
    assert number[:6] not in serialized
    assert number[:12] not in serialized.replace(" ", "").replace("-", "")


async def test_detokenizing_has_its_own_rate_limit_per_key(make_vault: Any) -> None:
    async with make_vault(detokenize_rps=0.01, detokenize_burst=2) as vault:
        admin = await vault.admin()
        second = await vault.key(admin.tenant, "admin")
        number = CARDS["jcb"]
        token = (await vault.tokenize(admin.headers, number))["token"]

        allowed = [await vault.detokenize(admin.headers, token) for _ in range(2)]
        limited = await vault.detokenize(admin.headers, token)
        other_key = await vault.detokenize(bearer(second.secret), token)
        tokenizing = await vault.http.post("/v1/tokens", json=card(number), headers=admin.headers)

        assert [r.status_code for r in allowed] == [200, 200]
        assert_problem(limited, 429, "rate_limited")
        # The limit is a sliding window of ``burst`` per ``burst / rps`` seconds.
        retry_after = int(limited.headers["retry-after"])
        assert 1 <= retry_after <= 2 / 0.01 + 1, retry_after
        assert number not in limited.text
        assert other_key.status_code == 200, "the limit is per key, not per tenant"
        assert tokenizing.status_code == 200, "tokenizing is not under the detokenize limit"
        (violation,) = await vault.audit(admin.headers, "ratelimit.exceeded")
        assert violation["details"]["limit"] == "detokenize"
        assert len(await vault.audit(admin.headers, "token.detokenized")) == 3


async def test_guessing_tokens_runs_into_the_detokenize_limit(make_vault: Any) -> None:
    async with make_vault(detokenize_rps=0.01, detokenize_burst=3) as vault:
        admin = await vault.admin()
        guesses = [await vault.detokenize(admin.headers, f"tok_{index:024d}") for index in range(4)]

        assert [r.status_code for r in guesses] == [404, 404, 404, 429]


async def test_a_purged_token_is_gone_and_the_purge_is_audited(vault: VaultGateway) -> None:
    admin = await vault.admin()
    number = CARDS["diners"]
    token = (await vault.tokenize(admin.headers, number))["token"]

    purged = await vault.http.delete(f"/v1/tokens/{token}", headers=admin.headers)

    assert purged.status_code == 204, purged.text
    assert purged.content == b""
    assert_problem(await vault.detokenize(admin.headers, token), 404, "not_found")
    assert_problem(
        await vault.http.get(f"/v1/tokens/{token}", headers=admin.headers), 404, "not_found"
    )
    assert_problem(
        await vault.http.delete(f"/v1/tokens/{token}", headers=admin.headers), 404, "not_found"
    )
    (record,) = await vault.audit(admin.headers, "token.purged")
    assert (record["actor"], record["resource"]) == (admin.key_id, token)
    assert number not in json.dumps(record)
    again = await vault.http.post("/v1/tokens", json=card(number), headers=admin.headers)
    assert again.status_code == 201, again.text
    assert again.json()["token"] != token


# -- settings -----------------------------------------------------------------------------


async def test_expose_bin_shows_and_hides_the_first_six_digits(vault: VaultGateway) -> None:
    admin, neighbour = await vault.admin(), await vault.admin()
    number = CARDS["unionpay"]

    hidden = await vault.tokenize(admin.headers, number)
    settings = await vault.http.get("/v1/settings", headers=admin.headers)
    enabled = await vault.http.patch(
        "/v1/settings", json={"expose_bin": True}, headers=admin.headers
    )
    shown = await vault.tokenize(admin.headers, number)
    fresh = await vault.tokenize(admin.headers, CARDS["amex"])
    elsewhere = await vault.tokenize(neighbour.headers, number)
    disabled = await vault.http.patch(
        "/v1/settings", json={"expose_bin": False}, headers=admin.headers
    )
    hidden_again = await vault.tokenize(admin.headers, number)

    assert "bin" not in hidden
    assert settings.json() == {"expose_bin": False, "signature_required_above": None}
    assert enabled.status_code == 200, enabled.text
    assert enabled.json()["expose_bin"] is True
    assert shown["bin"] == number[:6]
    assert fresh["bin"] == CARDS["amex"][:6]
    assert shown["token"] == hidden["token"]
    assert "bin" not in elsewhere, "another tenant's setting leaked across"
    assert disabled.json()["expose_bin"] is False
    assert "bin" not in hidden_again
    (change, *_) = await vault.audit(admin.headers, "tenant.settings_changed")
    assert change["actor"] == admin.key_id


async def test_settings_need_the_settings_scope(vault: VaultGateway) -> None:
    for response in (
        await vault.http.get("/v1/settings", headers=OPERATOR),
        await vault.http.patch("/v1/settings", json={"expose_bin": True}, headers=OPERATOR),
        await vault.http.post("/v1/settings/signing-secret", headers=OPERATOR),
    ):
        assert "settings:manage" in assert_problem(response, 403, "forbidden")["detail"]
    assert "bin" not in await vault.tokenize(OPERATOR, CARDS["visa"])


@pytest.mark.parametrize(
    "body",
    [
        {"expose_bin": "yes"},
        {"signature_required_above": -1},
        {"signature_required_above": "100"},
        {"unknown": True},
    ],
    ids=["bin as text", "negative threshold", "threshold as text", "unknown field"],
)
async def test_invalid_settings_are_422_and_change_nothing(
    vault: VaultGateway, body: dict[str, Any]
) -> None:
    admin = await vault.admin()
    response = await vault.http.patch("/v1/settings", json=body, headers=admin.headers)

    assert_problem(response, 422, "validation_failed")
    current = await vault.http.get("/v1/settings", headers=admin.headers)
    assert current.json() == {"expose_bin": False, "signature_required_above": None}


async def test_expose_bin_never_shows_six_and_four_of_a_short_number(vault: VaultGateway) -> None:
    admin = await vault.admin()
    enabled = await vault.http.patch(
        "/v1/settings", json={"expose_bin": True}, headers=admin.headers
    )
    assert enabled.status_code == 200, enabled.text

    short = await vault.tokenize(admin.headers, CARDS["diners"])
    long = await vault.tokenize(admin.headers, CARDS["visa"])

    assert len(CARDS["diners"]) == 14
    assert "bin" not in short, "six plus four of 14 digits would leave only four hidden"
    assert short["last4"] == CARDS["diners"][-4:]
    assert long["bin"] == CARDS["visa"][:6]
