"""Policy parsing and validation: versions by content, errors by line."""

from __future__ import annotations

import json

import pytest

from strongroom.domain.risk import (
    DEFAULT_POLICY,
    DEFAULT_POLICY_TEXT,
    FACTOR_KINDS,
    PolicyInvalid,
    validate_policy_text,
)
from strongroom.domain.risk.policy import AmountAbove, VelocityCount

VALID = """\
review_threshold: 30
decline_threshold: 70
factors:
  - name: card_velocity
    kind: velocity_count
    subject: card
    window_seconds: 600
    threshold: 5
    weight: 40
  - name: allowed_countries
    kind: country_not_allowed
    allowed: [FR, DE]
    weight: 20
"""


def errors_of(text: str) -> list[tuple[int | None, int | None, str]]:
    with pytest.raises(PolicyInvalid) as caught:
        validate_policy_text(text)
    return [(e.line, e.column, e.message) for e in caught.value.errors]


def test_the_default_policy_has_what_the_issue_promises() -> None:
    kinds = {factor.kind for factor in DEFAULT_POLICY.factors}
    card_velocity = [
        f for f in DEFAULT_POLICY.factors if isinstance(f, VelocityCount) and f.subject == "card"
    ]
    (amounts,) = [f for f in DEFAULT_POLICY.factors if isinstance(f, AmountAbove)]
    assert card_velocity
    assert {"EUR", "USD", "GBP"} <= set(amounts.limits)
    assert amounts.default is not None
    assert {"first_seen_card", "blocklist", "unverified_agent", "processor_health"} <= kinds
    assert "country_not_allowed" not in kinds
    assert DEFAULT_POLICY.review_threshold < DEFAULT_POLICY.decline_threshold
    assert validate_policy_text(DEFAULT_POLICY_TEXT) == DEFAULT_POLICY


def test_every_kind_is_accepted() -> None:
    params = {
        "amount_above": "limits: {EUR: 100}\ndefault: 50",
        "velocity_count": "subject: ip\nwindow_seconds: 60\nthreshold: 3",
        "velocity_amount": "subject: merchant\nwindow_seconds: 60\nthreshold: 300",
        "country_not_allowed": "allowed: [DE]",
        "currency_not_allowed": "allowed: [EUR]",
        "blocklist": "tokens: [tok_a]\nbins: ['411111']\ndevices: [d1]",
        "offline_floor_limit": "floor_limit: 5000",
        "processor_health": "min_band: elevated",
    }
    factors = "".join(
        f"  - name: f_{kind}\n    kind: {kind}\n    weight: 5\n"
        + "".join(f"    {line}\n" for line in params.get(kind, "").splitlines())
        for kind in FACTOR_KINDS
    )
    policy = validate_policy_text(f"review_threshold: 1\ndecline_threshold: 2\nfactors:\n{factors}")
    assert [f.kind for f in policy.factors] == list(FACTOR_KINDS)


def test_the_version_is_a_content_hash() -> None:
    policy = validate_policy_text(VALID)
    assert len(policy.version) == 16
    assert int(policy.version, 16) >= 0
    # Comments, key order, list order and JSON instead of YAML change nothing.
    reordered = VALID.replace("allowed: [FR, DE]", "allowed: [DE, FR, DE]")
    commented = "# a comment\n" + reordered
    as_json = json.dumps(json.loads(policy.canonical_json()), indent=2)
    assert validate_policy_text(commented).version == policy.version
    assert validate_policy_text(as_json).version == policy.version
    # Any change of meaning does.
    assert validate_policy_text(VALID.replace("weight: 40", "weight: 41")).version != (
        policy.version
    )


@pytest.mark.parametrize(
    ("text", "line", "column", "words"),
    [
        (VALID.replace("threshold: 5", "threshold: five"), 8, 16, "must be a valid integer"),
        (VALID.replace("weight: 40", "weight: 400"), 9, 13, "less than or equal to 100"),
        (VALID.replace("subject: card", "subject: phone"), 6, 14, "'card', 'merchant'"),
        (VALID.replace("kind: velocity_count", "kind: velocity"), 4, 5, "not a factor kind"),
        (VALID.replace("    threshold: 5\n", ""), 4, 5, "window_seconds, threshold"),
        (VALID.replace("[FR, DE]", "[FR, NO]"), 12, 19, "YAML reads False as a boolean"),
        (VALID.replace("[FR, DE]", "[FR, de]"), 12, 19, "two-letter ISO 3166"),
        (VALID.replace("    weight: 20\n", "    weight: 20\n    wieght: 1\n"), 14, 5, "wieght"),
        (VALID.replace("decline_threshold: 70", "decline_threshold: 30"), 2, 20, "greater than"),
        (VALID.replace("allowed_countries", "card_velocity"), 10, 11, "already used"),
        (VALID.replace("window_seconds: 600", "window_seconds: 600\n    window_seconds: 60"), 8, 5,
         "more than once"),
        (VALID + "  - [\n", 15, 1, "YAML is malformed"),
        ("a: &anchor 1\nb: *anchor\n", 1, 4, "anchors and aliases"),
        ("- 1\n- 2\n", 1, 1, "must be a mapping"),
    ],
)  # fmt: skip
def test_yaml_errors_name_their_line(text: str, line: int, column: int, words: str) -> None:
    found = errors_of(text)
    assert any((ln, col) == (line, column) and words in message for ln, col, message in found), (
        found
    )


def test_json_errors_name_their_line() -> None:
    good = json.loads(validate_policy_text(VALID).canonical_json())
    good["factors"][1]["weight"] = -1
    text = json.dumps(good, indent=2)
    line = text.splitlines().index('      "weight": -1') + 1
    assert errors_of(text) == [
        (line, 17, "factors[1].weight must be greater than or equal to 0 (got -1).")
    ]
    assert errors_of('{\n  "review_threshold": 10,\n  "factors": [\n}') == [
        (4, 1, "The JSON is malformed: Expecting value.")
    ]
    assert errors_of('{"review_threshold": 1,\n "review_threshold": 2}')[0][:2] == (2, 2)
    assert "NaN" in errors_of('{"review_threshold": NaN}')[0][2]


def test_all_problems_are_reported_in_source_order() -> None:
    text = VALID.replace("weight: 40", "weight: 400").replace("[FR, DE]", "[fr]")
    found = errors_of(text)
    assert [(ln, col) for ln, col, _ in found] == [(9, 13), (12, 15)]
    with pytest.raises(PolicyInvalid, match=r"2 problems\): line 9, column 13"):
        validate_policy_text(text)


def test_empty_and_huge_texts_are_refused() -> None:
    assert "empty" in errors_of("  \n")[0][2]
    assert "larger than" in errors_of("#" * (300 * 1024))[0][2]
    assert "review_threshold is required" in " ".join(m for _, _, m in errors_of("factors: []"))
    unknown = errors_of(VALID + "extra: 1\n")
    assert unknown == [
        (
            14,
            1,
            "extra is not a setting of a policy; it takes description, review_threshold, "
            "decline_threshold, factors.",
        )
    ]
