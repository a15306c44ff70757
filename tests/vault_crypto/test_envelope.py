"""The sealed-value format (``sr1``): round trips, binding to context and header,
tamper evidence, opaque failure, and a known-answer check of the layout.

The known-answer tests build sealed values with ``cryptography``'s AESGCM directly,
from the layout the envelope module documents, so they pin the format rather than
whatever the implementation happens to do.
"""

from __future__ import annotations

import base64
import os
import string
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from strongroom.crypto.envelope import (
    DataKey,
    SealContext,
    SealedHeader,
    Unreadable,
    is_sealed,
    new_data_key_material,
    read_header,
)

B64URL = string.ascii_letters + string.digits + "-_"
CONTEXT = SealContext("ten_a", "card_tokens", "number", "tok_0123456789")

contexts = st.builds(
    SealContext,
    st.text(max_size=24),
    st.text(max_size=24),
    st.text(max_size=24),
    st.text(max_size=24),
)
materials = st.binary(min_size=32, max_size=32)
dek_ids = st.text(string.ascii_letters + string.digits + "_", min_size=1, max_size=64)


def new_key(dek_id: str = "dk_test", kek_version: int = 1) -> DataKey:
    return DataKey(dek_id, kek_version, new_data_key_material())


def split(sealed: str) -> tuple[str, bytes]:
    """The header text (up to and including its last ':') and the decoded body."""
    header, _, encoded = sealed.rpartition(":")
    return header + ":", base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))


def join(header: str, body: bytes) -> str:
    return header + base64.urlsafe_b64encode(body).rstrip(b"=").decode()


def opens_as(key: DataKey, sealed: str, ctx: SealContext) -> bytes | None:
    """The plaintext, or None when ``key.open`` refuses with ``Unreadable``."""
    try:
        return key.open(sealed, ctx)
    except Unreadable:
        return None


# -- round trips ---------------------------------------------------------------------


@settings(deadline=None)
@given(plaintext=st.binary(max_size=4096), ctx=contexts, material=materials, dek_id=dek_ids)
def test_a_sealed_value_opens_to_its_plaintext(
    plaintext: bytes, ctx: SealContext, material: bytes, dek_id: str
) -> None:
    key = DataKey(dek_id, 3, material)

    sealed = key.seal(plaintext, ctx)

    assert sealed.startswith(f"sr1:v3:{dek_id}:")
    assert read_header(sealed) == SealedHeader(3, dek_id)
    assert is_sealed(sealed)
    assert key.open(sealed, ctx) == plaintext
    # Another DataKey object over the same material opens it too: nothing is kept in the key.
    assert DataKey(dek_id, 3, material).open(sealed, ctx) == plaintext


@settings(deadline=None)
@given(plaintext=st.binary(max_size=256))
def test_every_seal_draws_a_fresh_nonce(plaintext: bytes) -> None:
    key = new_key()

    sealed = [key.seal(plaintext, CONTEXT) for _ in range(8)]

    assert len(set(sealed)) == len(sealed)
    assert len({split(value)[1][:12] for value in sealed}) == len(sealed)
    assert all(key.open(value, CONTEXT) == plaintext for value in sealed)


def test_the_body_is_unpadded_base64url_of_nonce_ciphertext_and_tag() -> None:
    key = new_key()

    for size in range(10):
        sealed = key.seal(b"x" * size, CONTEXT)
        encoded = sealed.rpartition(":")[2]
        assert set(encoded) <= set(B64URL), sealed
        assert len(split(sealed)[1]) == 12 + size + 16


def test_a_plaintext_does_not_show_in_its_sealed_value() -> None:
    key = new_key()
    plaintext = b"4111111111111111"

    sealed = key.seal(plaintext, CONTEXT)

    assert plaintext.decode() not in sealed
    assert plaintext not in split(sealed)[1]


def test_a_data_key_rewrapped_under_a_newer_kek_still_opens_what_it_sealed() -> None:
    material = new_data_key_material()
    sealed = DataKey("dk_test", 1, material).seal(b"secret", CONTEXT)

    # After a rewrap the record names KEK version 2; the value still names 1.
    assert DataKey("dk_test", 2, material).open(sealed, CONTEXT) == b"secret"


# -- binding -------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["tenant", "place", "field", "record_id"])
def test_a_value_opened_in_another_context_is_unreadable(field: str) -> None:
    key = new_key()
    sealed = key.seal(b"secret", CONTEXT)
    values = {
        "tenant": CONTEXT.tenant,
        "place": CONTEXT.place,
        "field": CONTEXT.field,
        "record_id": CONTEXT.record_id,
    }

    moved = SealContext(**{**values, field: values[field] + "x"})
    emptied = SealContext(**{**values, field: ""})

    assert key.open(sealed, CONTEXT) == b"secret"
    for other in (moved, emptied):
        with pytest.raises(Unreadable):
            key.open(sealed, other)


def test_swapping_two_fields_of_the_context_is_unreadable() -> None:
    key = new_key()
    ctx = SealContext("a", "b", "c", "d")
    sealed = key.seal(b"secret", ctx)

    for swapped in (
        SealContext("b", "a", "c", "d"),
        SealContext("a", "b", "d", "c"),
        SealContext("d", "b", "c", "a"),
    ):
        with pytest.raises(Unreadable):
            key.open(sealed, swapped)


@settings(deadline=None)
@given(ctx=contexts, other=contexts)
def test_any_other_context_is_unreadable(ctx: SealContext, other: SealContext) -> None:
    assume(ctx != other)
    key = new_key()

    with pytest.raises(Unreadable):
        key.open(key.seal(b"secret", ctx), other)


@settings(deadline=None)
@given(first=contexts, second=contexts)
def test_context_encoding_is_unambiguous(first: SealContext, second: SealContext) -> None:
    assert (first.encoded() == second.encoded()) == (first == second)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (SealContext("ab", "c", "x", "y"), SealContext("a", "bc", "x", "y")),
        (SealContext("x", "ab", "c", "y"), SealContext("x", "a", "bc", "y")),
        (SealContext("x", "y", "ab", "c"), SealContext("x", "y", "a", "bc")),
        (SealContext("1.a", "", "", ""), SealContext("", "a", "", "")),
        (SealContext("", "", "", "1.a"), SealContext("", "", "1.a", "")),
    ],
)
def test_contexts_that_concatenate_alike_encode_differently(
    first: SealContext, second: SealContext
) -> None:
    key = new_key()

    assert first.encoded() != second.encoded()
    with pytest.raises(Unreadable):
        key.open(key.seal(b"secret", first), second)


def _relabel_version(sealed: str, version: int) -> str:
    header, body = sealed.split(":", 3)[:3], sealed.split(":", 3)[3]
    return f"{header[0]}:v{version}:{header[2]}:{body}"


def _relabel_dek(sealed: str, dek_id: str) -> str:
    prefix, version, _, body = sealed.split(":", 3)
    return f"{prefix}:{version}:{dek_id}:{body}"


@pytest.mark.parametrize("version", [2, 10, 999_999_999])
def test_a_header_naming_another_kek_version_is_unreadable(version: int) -> None:
    material = new_data_key_material()
    sealed = DataKey("dk_test", 1, material).seal(b"secret", CONTEXT)
    relabelled = _relabel_version(sealed, version)

    assert read_header(relabelled).kek_version == version
    # Neither the key as first wrapped nor as rewrapped under that version opens it.
    for kek_version in (1, version):
        with pytest.raises(Unreadable):
            DataKey("dk_test", kek_version, material).open(relabelled, CONTEXT)


def test_a_header_naming_another_data_key_is_unreadable() -> None:
    material = new_data_key_material()
    sealed = DataKey("dk_test", 1, material).seal(b"secret", CONTEXT)
    relabelled = _relabel_dek(sealed, "dk_other")

    with pytest.raises(Unreadable):
        DataKey("dk_test", 1, material).open(relabelled, CONTEXT)
    # The id is authenticated, not merely compared: the same material under the
    # other id refuses it too.
    with pytest.raises(Unreadable):
        DataKey("dk_other", 1, material).open(relabelled, CONTEXT)


def test_another_data_key_cannot_open_a_value() -> None:
    sealed = new_key("dk_test").seal(b"secret", CONTEXT)

    with pytest.raises(Unreadable):
        new_key("dk_test").open(sealed, CONTEXT)


# -- tampering -------------------------------------------------------------------------


@settings(deadline=None)
@given(
    plaintext=st.binary(max_size=64),
    position=st.integers(min_value=0),
    mask=st.integers(min_value=1, max_value=255),
)
def test_any_changed_byte_of_the_body_is_unreadable(
    plaintext: bytes, position: int, mask: int
) -> None:
    key = new_key()
    sealed = key.seal(plaintext, CONTEXT)
    header, body = split(sealed)
    index = position % len(body)  # nonce, ciphertext or tag
    altered = bytearray(body)
    altered[index] ^= mask

    with pytest.raises(Unreadable):
        key.open(join(header, bytes(altered)), CONTEXT)


@settings(deadline=None)
@given(
    plaintext=st.binary(max_size=64),
    position=st.integers(min_value=0),
    replacement=st.sampled_from(B64URL),
)
def test_any_changed_character_of_the_body_is_unreadable(
    plaintext: bytes, position: int, replacement: str
) -> None:
    """Every character but the last carries six bits of the body; the last one is
    covered by ``test_the_body_encoding_is_canonical``."""
    key = new_key()
    sealed = key.seal(plaintext, CONTEXT)
    start = sealed.rindex(":") + 1
    index = start + position % (len(sealed) - start - 1)
    assume(sealed[index] != replacement)

    with pytest.raises(Unreadable):
        key.open(sealed[:index] + replacement + sealed[index + 1 :], CONTEXT)


@settings(deadline=None)
@given(plaintext=st.binary(max_size=64), data=st.data())
def test_a_truncated_or_extended_value_is_unreadable(plaintext: bytes, data: st.DataObject) -> None:
    key = new_key()
    sealed = key.seal(plaintext, CONTEXT)
    cut = data.draw(st.integers(min_value=0, max_value=len(sealed) - 1), label="cut")
    extra = data.draw(st.text(B64URL, min_size=1, max_size=8), label="extra")

    for altered in (sealed[:cut], sealed + extra, sealed[:cut] + extra):
        assume(altered != sealed)
        with pytest.raises(Unreadable):
            key.open(altered, CONTEXT)


def _last_character_spare_bits(sealed: str) -> str:
    # An empty plaintext makes a 28-byte body: its last base64 character holds two
    # bits of data and four unused ones; this flips an unused one.
    index = B64URL.index(sealed[-1]) ^ 1
    return sealed[:-1] + B64URL[index]


def _standard_alphabet(sealed: str) -> str:
    header, _, encoded = sealed.rpartition(":")
    for char, alias in (("-", "+"), ("_", "/")):
        if char in encoded:
            return f"{header}:{encoded.replace(char, alias, 1)}"
    raise AssertionError("no '-' or '_' in the body")


def _appended_padding(sealed: str) -> str:
    return sealed + "=="


def _embedded_junk(sealed: str) -> str:
    head, tail = sealed[:-8], sealed[-8:]
    return head + "!*\n " + tail


@pytest.mark.parametrize(
    "alter",
    [
        pytest.param(_last_character_spare_bits, id="spare-bits"),
        pytest.param(_standard_alphabet, id="standard-alphabet"),
        pytest.param(_appended_padding, id="padding"),
        pytest.param(_embedded_junk, id="junk"),
    ],
)
def test_the_body_encoding_is_canonical(alter: Callable[[str], str]) -> None:
    key = new_key()
    # Retry until the body holds a '-' or '_' (needed by one alteration only).
    for _ in range(200):
        sealed = key.seal(b"", CONTEXT)
        if {"-", "_"} & set(sealed.rpartition(":")[2]):
            break
    altered = alter(sealed)

    assert altered != sealed
    with pytest.raises(Unreadable):
        key.open(altered, CONTEXT)


# -- garbage in, one exception out -------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(text=st.text())
def test_arbitrary_text_is_unreadable_and_nothing_else(text: str) -> None:
    key = new_key()

    with pytest.raises(Unreadable) as raised:
        key.open(text, CONTEXT)

    assert type(raised.value) is Unreadable


@settings(max_examples=300, deadline=None)
@given(body=st.text())
def test_arbitrary_text_after_a_valid_header_is_unreadable(body: str) -> None:
    key = new_key()

    with pytest.raises(Unreadable):
        key.open("sr1:v1:dk_test:" + body, CONTEXT)


@settings(deadline=None)
@given(text=st.text())
def test_reading_a_header_of_arbitrary_text_raises_only_unreadable(text: str) -> None:
    assert isinstance(is_sealed(text), bool)
    try:
        header = read_header(text)
    except Unreadable:
        assert not is_sealed(text)
    else:
        assert is_sealed(text)
        assert text.startswith(f"sr1:v{header.kek_version}:{header.dek_id}:")


@pytest.mark.parametrize(
    "sealed",
    [
        pytest.param("", id="empty"),
        pytest.param("sr1:v1:dk_test:", id="no-body"),
        pytest.param("sr1:v1:dk_test:AAAA", id="short-body"),
        pytest.param("sr1:v1:dk_test:" + "A" * 37, id="impossible-length"),
        pytest.param("sr1:v1:dk_test:%%%%%%%%", id="not-base64"),
        pytest.param("sr1:v1:dk_test:ÄÖÜ" + "A" * 40, id="non-ascii"),
        pytest.param("sr2:v1:dk_test:" + "A" * 40, id="other-format"),
        pytest.param("sr1:v0:dk_test:" + "A" * 40, id="version-zero"),
        pytest.param("sr1:1:dk_test:" + "A" * 40, id="no-v"),
        pytest.param("sr1:v1:dk-test:" + "A" * 40, id="bad-id"),
        pytest.param(" sr1:v1:dk_test:" + "A" * 40, id="leading-space"),
        pytest.param("SR1:v1:dk_test:" + "A" * 40, id="upper-case"),
    ],
)
def test_malformed_values_are_unreadable(sealed: str) -> None:
    with pytest.raises(Unreadable):
        new_key().open(sealed, CONTEXT)


def test_failures_all_say_the_same_and_carry_no_detail() -> None:
    material = new_data_key_material()
    key = DataKey("dk_test", 1, material)
    sealed = key.seal(b"4111111111111111", CONTEXT)
    header, body = split(sealed)
    wrong_tag = join(header, body[:-1] + bytes([body[-1] ^ 1]))
    attempts: list[tuple[str, SealContext]] = [
        (wrong_tag, CONTEXT),
        (sealed, SealContext("ten_b", CONTEXT.place, CONTEXT.field, CONTEXT.record_id)),
        (_relabel_dek(sealed, "dk_other"), CONTEXT),
        (_relabel_version(sealed, 2), CONTEXT),
        (sealed[:-20], CONTEXT),
        ("sr1:v1:dk_test:%%%%", CONTEXT),
        ("nonsense", CONTEXT),
        ("", CONTEXT),
    ]

    errors: list[Unreadable] = []
    for value, ctx in attempts:
        with pytest.raises(Unreadable) as raised:
            key.open(value, ctx)
        errors.append(raised.value)

    assert {str(error) for error in errors} == {str(Unreadable())}
    message = str(errors[0]).lower()
    for detail in ("dk_test", "ten_a", "ten_b", "tag", "base64", "padding", "context", "4111"):
        assert detail not in message
    for error in errors:
        assert type(error) is Unreadable
        # No chained InvalidTag or binascii error for a traceback to show.
        assert error.__cause__ is None
        assert error.__context__ is None or error.__suppress_context__


@pytest.mark.parametrize(
    ("dek_id", "kek_version", "material"),
    [
        pytest.param("dk_test", 1, b"\x00" * 31, id="short-material"),
        pytest.param("dk_test", 1, b"\x00" * 33, id="long-material"),
        pytest.param("dk-test", 1, b"\x00" * 32, id="dash-in-id"),
        pytest.param("", 1, b"\x00" * 32, id="empty-id"),
        pytest.param("d" * 65, 1, b"\x00" * 32, id="long-id"),
        pytest.param("dk_test", 0, b"\x00" * 32, id="version-zero"),
    ],
)
def test_a_malformed_data_key_is_a_programming_error(
    dek_id: str, kek_version: int, material: bytes
) -> None:
    with pytest.raises(ValueError, match=r"^a (data key|KEK version)"):
        DataKey(dek_id, kek_version, material)


def test_new_data_key_material_is_32_random_bytes() -> None:
    drawn = {new_data_key_material() for _ in range(16)}

    assert len(drawn) == 16
    assert all(len(material) == 32 for material in drawn)


# -- known answers ------------------------------------------------------------------------


def _netstring_context(tenant: str, place: str, field: str, record_id: str) -> bytes:
    """The documented context encoding: each part as ``<length>.<part>``, in order.

    Lengths count characters (code points), as the implementation does; the sealed
    values Strongroom writes use ASCII contexts, where that is also the byte count.
    """
    return "".join(f"{len(part)}.{part}" for part in (tenant, place, field, record_id)).encode()


KNOWN_ANSWERS = [
    pytest.param(
        1, "dk_AAAAAAAAAAAAAAAAAAAA", b"", ("ten_a", "card_tokens", "number", "tok_x"), id="empty"
    ),
    pytest.param(
        7,
        "dk_" + "z" * 61,
        b"4111111111111111",
        ("ten_0123456789", "card_tokens", "number", "tok_" + "Q" * 24),
        id="card-number",
    ),
    pytest.param(
        123_456_789,
        "Z",
        bytes(range(256)),
        ("", "payments.raw", "event", "8f0c1b52-6a43-4c0e-9d7d-5a3c1e0f2b44"),
        id="binary-and-empty-tenant",
    ),
    pytest.param(
        2, "dk_1", b"x" * 1000, ("t", "tenant_secrets", "value", "transaction_signing"), id="long"
    ),
    pytest.param(3, "dk_u", b"hi", ("tenant-é", "pl🙂ce", "", "ü"), id="non-ascii-context"),
]


@pytest.mark.parametrize(("kek_version", "dek_id", "plaintext", "parts"), KNOWN_ANSWERS)
def test_an_independently_built_value_opens(
    kek_version: int, dek_id: str, plaintext: bytes, parts: tuple[str, str, str, str]
) -> None:
    material, nonce = os.urandom(32), os.urandom(12)
    header = f"sr1:v{kek_version}:{dek_id}:"
    aad = header.encode() + b"\x1f" + _netstring_context(*parts)
    body = nonce + AESGCM(material).encrypt(nonce, plaintext, aad)
    sealed = header + base64.urlsafe_b64encode(body).decode().rstrip("=")

    key = DataKey(dek_id, kek_version, material)

    assert key.open(sealed, SealContext(*parts)) == plaintext
    # And the same bytes under a context built any other way are refused.
    with pytest.raises(Unreadable):
        key.open(sealed, SealContext(parts[0] + "x", *parts[1:]))


@pytest.mark.parametrize(("kek_version", "dek_id", "plaintext", "parts"), KNOWN_ANSWERS)
def test_a_sealed_value_opens_independently(
    kek_version: int, dek_id: str, plaintext: bytes, parts: tuple[str, str, str, str]
) -> None:
    material = os.urandom(32)
    sealed = DataKey(dek_id, kek_version, material).seal(plaintext, SealContext(*parts))
    header = f"sr1:v{kek_version}:{dek_id}:"

    assert sealed.startswith(header)
    encoded = sealed[len(header) :]
    assert "=" not in encoded
    body = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    aad = header.encode() + b"\x1f" + _netstring_context(*parts)

    assert AESGCM(material).decrypt(body[:12], body[12:], aad) == plaintext
