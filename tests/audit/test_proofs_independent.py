"""The audit API's proofs and checkpoints hold up under an independent verifier.

The verifier below is written from the text of RFC 9162 (section 2.1.1 for the tree
hash, 2.1.3.2 for inclusion and 2.1.4.2 for consistency) with ``hashlib`` only; it
never imports ``strongroom.domain.merkle``. Checkpoint notes are parsed here too
(C2SP signed-note: body, blank line, ``— name base64(key id || signature)``), and
their Ed25519 signatures are checked with ``cryptography`` directly against the key
published as ``verifier_key`` (``name+hex(key id)+base64(0x01 || public key)``).

1. Every ``GET /v1/audit/proof/inclusion?seq=N&tree_size=M`` (all N < M, several M)
   verifies against ``root_hash``, which is the tree hash recomputed here from the
   stored records, and the latest checkpoint's root when M is its size.
2. Every ``GET /v1/audit/proof/consistency?first=A&second=B`` (many A <= B) verifies
   against the recomputed roots, and links the signed checkpoints to each other.
3. Checkpoint signatures verify under the published key; any change breaks them.
4. Bad inputs (seq >= tree_size, a size beyond the log, first > second, negative or
   non-numeric values) are 4xx problem+json, never 500.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest
from audit_support import AuditApp, database, open_audit_app
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from support import bearer
from support_database import Connection
from support_problems import assert_problem

# ---------------------------------------------------------------------------------------
# An independent RFC 9162 verifier (hashlib only).
# ---------------------------------------------------------------------------------------


HASH_SIZE: Final = 32


def leaf_hash(data: bytes) -> bytes:
    """MTH({d(0)}) = SHA-256(0x00 || d(0)) (RFC 9162 section 2.1.1)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def tree_hash(leaves: list[bytes]) -> bytes:
    """MTH(D[n]) over leaf hashes, by the recursive definition of section 2.1.1."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:  # the largest power of two smaller than n
        k *= 2
    return node_hash(tree_hash(leaves[:k]), tree_hash(leaves[k:]))


def verify_inclusion(
    leaf_index: int, tree_size: int, leaf: bytes, inclusion_path: list[bytes], root: bytes
) -> bool:
    """RFC 9162 section 2.1.3.2, step by step; every hash has SHA-256's 32 bytes."""
    if not all(len(h) == HASH_SIZE for h in (leaf, root, *inclusion_path)):
        return False
    # 1. If leaf_index is greater than or equal to tree_size, then stop and fail.
    if leaf_index >= tree_size:
        return False
    # 2. Set fn to leaf_index and sn to tree_size - 1.
    fn, sn = leaf_index, tree_size - 1
    # 3. Set r to hash.
    r = leaf
    # 4. For each value p in the inclusion_path array:
    for p in inclusion_path:
        # a. If sn is 0, then stop the iteration and fail the proof verification.
        if sn == 0:
            return False
        # b. If LSB(fn) is set, or if fn is equal to sn, then:
        if fn & 1 or fn == sn:
            # 1. Set r to HASH(0x01 || p || r).
            r = node_hash(p, r)
            # 2. If LSB(fn) is not set, then right-shift both fn and sn equally until
            #    either LSB(fn) is set or fn is 0.
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        # Otherwise: Set r to HASH(0x01 || r || p).
        else:
            r = node_hash(r, p)
        # c. Finally, right-shift both fn and sn one time.
        fn >>= 1
        sn >>= 1
    # 5. Compare sn to 0. Compare r against the root_hash. If sn is equal to 0 and r
    #    and the root_hash are equal, then the log has proven the inclusion of hash.
    return sn == 0 and r == root


def verify_consistency(
    first: int, second: int, first_hash: bytes, second_hash: bytes, consistency_path: list[bytes]
) -> bool:
    """RFC 9162 section 2.1.4.2, step by step (equal sizes: empty proof, equal roots)."""
    if not 0 < first <= second:
        return False
    if first == second:
        return not consistency_path and first_hash == second_hash
    if not all(len(h) == HASH_SIZE for h in (first_hash, second_hash, *consistency_path)):
        return False
    path = list(consistency_path)
    # 1. If consistency_path is an empty array, stop and fail the proof verification.
    if not path:
        return False
    # 2. If first is an exact power of 2, then prepend first_hash to the array.
    if first & (first - 1) == 0:
        path.insert(0, first_hash)
    # 3. Set fn to first - 1 and sn to second - 1.
    fn, sn = first - 1, second - 1
    # 4. If LSB(fn) is set, then right-shift both fn and sn equally until LSB(fn) is not set.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5. Set both fr and sr to the first value in the consistency_path array.
    fr = sr = path[0]
    # 6. For each subsequent value c in the consistency_path array:
    for c in path[1:]:
        # a. If sn is 0, then stop the iteration and fail the proof verification.
        if sn == 0:
            return False
        # b. If LSB(fn) is set, or if fn is equal to sn, then:
        if fn & 1 or fn == sn:
            # 1. Set fr to HASH(0x01 || c || fr). Set sr to HASH(0x01 || c || sr).
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            # 2. If LSB(fn) is not set, then right-shift both fn and sn equally until
            #    either LSB(fn) is set or fn is 0.
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        # Otherwise: Set sr to HASH(0x01 || sr || c).
        else:
            sr = node_hash(sr, c)
        # c. Finally, right-shift both fn and sn one time.
        fn >>= 1
        sn >>= 1
    # 7. After completing iterating through the consistency_path array as described
    #    above, verify that the fr calculated is equal to the first_hash supplied, that
    #    the sr calculated is equal to the second_hash supplied, and that sn is 0.
    return fr == first_hash and sr == second_hash and sn == 0


# ---------------------------------------------------------------------------------------
# An independent C2SP signed-note checkpoint reader.
# ---------------------------------------------------------------------------------------

EM_DASH: Final = "\u2014 "


@dataclass(frozen=True)
class Note:
    body: str
    origin: str
    tree_size: int
    root_hash: bytes
    timestamp: int
    key_name: str
    key_id: bytes
    signature: bytes


def parse_note(text: str) -> Note:
    body_text, separator, rest = text.partition("\n\n")
    assert separator, text
    body = body_text + "\n"  # up to and including the line before the blank line
    lines = body_text.split("\n")
    assert len(lines) == 4, lines
    assert lines[3].startswith("timestamp "), lines
    (signature_line,) = rest.rstrip("\n").split("\n")
    assert signature_line.startswith(EM_DASH), signature_line
    name, blob = signature_line.removeprefix(EM_DASH).split(" ")
    raw = base64.b64decode(blob, validate=True)
    assert len(raw) == 4 + 64, raw
    return Note(
        body=body, origin=lines[0], tree_size=int(lines[1]),
        root_hash=base64.b64decode(lines[2], validate=True),
        timestamp=int(lines[3].removeprefix("timestamp ")),
        key_name=name, key_id=raw[:4], signature=raw[4:],
    )  # fmt: skip


def parse_verifier_key(vkey: str) -> tuple[str, bytes, bytes]:
    """``name+hex(key id)+base64(0x01 || public key)`` → (name, key id, public key)."""
    name, key_id_hex, encoded = vkey.split("+", 2)  # base64 may contain "+" too
    key_id = bytes.fromhex(key_id_hex)
    raw = base64.b64decode(encoded, validate=True)
    assert raw[0] == 0x01, "the signed-note key type of Ed25519 is 0x01"
    public = raw[1:]
    assert len(public) == 32
    assert key_id == hashlib.sha256(name.encode() + b"\n" + b"\x01" + public).digest()[:4]
    return name, key_id, public


def signature_holds(note: Note, vkey: str) -> bool:
    name, key_id, public = parse_verifier_key(vkey)
    if note.key_name != name or note.key_id != key_id:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(note.signature, note.body.encode())
    except InvalidSignature:
        return False
    return True


# ---------------------------------------------------------------------------------------
# The verifier itself, checked first.
# ---------------------------------------------------------------------------------------

VECTORS: Final = Path("/work/shared/vectors/transparency-dev-merkle/testdata")


def _b64_list(values: list[str] | None) -> list[bytes]:
    return [base64.b64decode(v) for v in values or []]


def test_the_independent_verifier_agrees_with_the_transparency_dev_vectors() -> None:
    if not VECTORS.is_dir():
        pytest.skip(f"shared test vectors are not present at {VECTORS}")
    checked = 0
    for path in sorted((VECTORS / "inclusion").rglob("*.json")):
        v = json.loads(path.read_text())
        try:
            ok = verify_inclusion(
                v["leafIdx"], v["treeSize"], base64.b64decode(v["leafHash"] or ""),
                _b64_list(v["proof"]), base64.b64decode(v["root"] or ""),
            )  # fmt: skip
        except (ValueError, binascii.Error):
            ok = False
        assert ok is not v["wantErr"], path
        checked += 1
    for path in sorted((VECTORS / "consistency").rglob("*.json")):
        v = json.loads(path.read_text())
        ok = verify_consistency(
            v["size1"], v["size2"], base64.b64decode(v["root1"] or ""),
            base64.b64decode(v["root2"] or ""), _b64_list(v["proof"]),
        )  # fmt: skip
        assert ok is not v["wantErr"], path
        checked += 1
    assert checked > 100


def test_the_independent_verifier_rejects_what_it_must() -> None:
    leaves = [leaf_hash(bytes([i])) for i in range(7)]
    root = tree_hash(leaves)
    # PATH(3, D[7]) by hand: leaf 2, then MTH of leaves 0..1, then MTH of leaves 4..6.
    path = [leaves[2], tree_hash(leaves[:2]), tree_hash(leaves[4:])]
    assert verify_inclusion(3, 7, leaves[3], path, root)
    assert not verify_inclusion(2, 7, leaves[3], path, root)
    assert not verify_inclusion(3, 4, leaves[3], path, root)
    assert not verify_inclusion(3, 7, leaves[4], path, root)
    assert not verify_inclusion(3, 7, leaves[3], path[:-1], root)
    assert not verify_inclusion(3, 7, leaves[3], [*path, root], root)
    assert not verify_inclusion(3, 7, leaves[3], [path[1], path[0], path[2]], root)
    # PROOF(3, D[7]): leaf 2, leaf 3, MTH of leaves 0..1, MTH of leaves 4..6.
    proof = [leaves[2], leaves[3], tree_hash(leaves[:2]), tree_hash(leaves[4:])]
    assert verify_consistency(3, 7, tree_hash(leaves[:3]), root, proof)
    assert not verify_consistency(3, 7, tree_hash(leaves[:4]), root, proof)
    assert not verify_consistency(3, 4, tree_hash(leaves[:3]), root, proof)
    assert not verify_consistency(3, 7, tree_hash(leaves[:3]), root, proof[:-1])
    assert not verify_consistency(7, 3, root, tree_hash(leaves[:3]), proof)


# ---------------------------------------------------------------------------------------
# The log under test.
# ---------------------------------------------------------------------------------------

SIGNED_SIZES: Final = (2, 7, 16, 29, 40)
FINAL_SIZE: Final = 43
MIN_SIZES: Final = (1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 15, 16, 17, 29, 31, 32, 33, 40, 41, 43)


@dataclass
class ProofLog:
    app: AuditApp
    leaves: list[bytes]
    notes: list[str]

    async def get(self, path: str, **params: Any) -> dict[str, Any]:
        response = await self.app.http.get(path, params=params, headers=bearer(self.app.platform))
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


def _hexes(values: list[str]) -> list[bytes]:
    return [bytes.fromhex(v) for v in values]


def _stored(connection: Connection) -> tuple[list[bytes], list[str]]:
    rows = connection.execute("SELECT seq, data FROM audit_records ORDER BY seq").fetchall()
    assert [seq for seq, _ in rows] == list(range(len(rows)))
    notes = connection.execute("SELECT note FROM audit_checkpoints ORDER BY tree_size").fetchall()
    return [leaf_hash(bytes(data)) for _, data in rows], [note for (note,) in notes]


@pytest.fixture
async def proof_log(tmp_path: Path) -> Any:
    """43 records (2 setup ones, HTTP failures and recorded actions) with checkpoints
    at sizes 2, 7, 16, 29 and 40; the last 3 records are not signed yet."""
    async with open_audit_app(tmp_path) as app:
        trail = app.state.audit
        size = await app.state.store.audit.size()
        assert size == 2
        assert await trail.checkpoint() is not None
        while size < FINAL_SIZE:
            if size % 3 == 0:
                response = await app.http.get("/v1/audit", headers=bearer("not-a-key-at-all-x"))
                assert response.status_code == 401
            else:
                await trail.record(
                    "test.action", actor=f"actor-{size}", tenant=app.home.id,
                    details={"size": size, "text": "z" * (size % 11)},
                )  # fmt: skip
            size += 1
            assert await app.state.store.audit.size() == size
            if size in SIGNED_SIZES:
                signed = await trail.checkpoint()
                assert signed is not None
                assert signed.checkpoint.tree_size == size
        with database(app.data_dir) as connection:
            leaves, notes = _stored(connection)
        assert len(leaves) == FINAL_SIZE
        yield ProofLog(app, leaves, notes)


async def test_every_inclusion_proof_verifies_against_the_recomputed_root(
    proof_log: ProofLog,
) -> None:
    latest = await proof_log.get("/v1/audit/checkpoints/latest")
    assert latest["tree_size"] == SIGNED_SIZES[-1]
    signed_roots = {parse_note(n).tree_size: parse_note(n).root_hash for n in proof_log.notes}
    assert sorted(signed_roots) == list(SIGNED_SIZES)
    checked = 0
    for tree_size in MIN_SIZES:
        root = tree_hash(proof_log.leaves[:tree_size])
        for seq in range(tree_size):
            proof = await proof_log.get("/v1/audit/proof/inclusion", seq=seq, tree_size=tree_size)
            assert proof["leaf_index"] == seq
            assert proof["tree_size"] == tree_size
            assert bytes.fromhex(proof["leaf_hash"]) == proof_log.leaves[seq]
            assert bytes.fromhex(proof["root_hash"]) == root, (seq, tree_size)
            path = _hexes(proof["audit_path"])
            assert verify_inclusion(seq, tree_size, proof_log.leaves[seq], path, root), (
                seq, tree_size, proof,
            )  # fmt: skip
            if path:
                bent = [bytes([path[0][0] ^ 1]) + path[0][1:], *path[1:]]
                assert not verify_inclusion(seq, tree_size, proof_log.leaves[seq], bent, root)
            checked += 1
        if tree_size in signed_roots:
            assert signed_roots[tree_size] == root, tree_size
        if tree_size == latest["tree_size"]:
            assert bytes.fromhex(latest["root_hash"]) == root
    assert checked == sum(MIN_SIZES)


async def test_every_consistency_proof_verifies_against_the_recomputed_roots(
    proof_log: ProofLog,
) -> None:
    pairs = [(a, b) for a in MIN_SIZES for b in MIN_SIZES if a <= b]
    for first, second in pairs:
        answer = await proof_log.get("/v1/audit/proof/consistency", first=first, second=second)
        first_root = tree_hash(proof_log.leaves[:first])
        second_root = tree_hash(proof_log.leaves[:second])
        assert (answer["first"], answer["second"]) == (first, second)
        assert bytes.fromhex(answer["first_root"]) == first_root, (first, second)
        assert bytes.fromhex(answer["second_root"]) == second_root, (first, second)
        proof = _hexes(answer["proof"])
        assert verify_consistency(first, second, first_root, second_root, proof), (
            first, second, answer,
        )  # fmt: skip
        if proof:
            assert not verify_consistency(first, second, second_root, second_root, proof)


async def test_signed_checkpoints_are_consistent_with_each_other(proof_log: ProofLog) -> None:
    notes = [parse_note(text) for text in proof_log.notes]
    for older, newer in itertools.pairwise(notes):
        answer = await proof_log.get(
            "/v1/audit/proof/consistency", first=older.tree_size, second=newer.tree_size
        )
        assert verify_consistency(
            older.tree_size, newer.tree_size, older.root_hash, newer.root_hash,
            _hexes(answer["proof"]),
        )  # fmt: skip


async def test_checkpoint_signatures_verify_under_the_published_key(proof_log: ProofLog) -> None:
    latest = await proof_log.get("/v1/audit/checkpoints/latest")
    vkey = latest["verifier_key"]
    assert vkey == proof_log.app.state.audit.verifier_key
    name, key_id, public = parse_verifier_key(vkey)
    assert public == proof_log.app.state.audit.public_key

    note = parse_note(latest["text"])
    assert latest["text"] == proof_log.notes[-1]
    assert note.key_name == name == latest["key_name"]
    assert note.key_id == key_id
    assert note.origin == latest["origin"]
    assert note.tree_size == latest["tree_size"]
    assert note.root_hash.hex() == latest["root_hash"]
    assert note.timestamp == latest["timestamp"]
    assert base64.b64decode(latest["signature"]) == note.key_id + note.signature
    assert note.body == latest["text"].split("\n\n")[0] + "\n"
    assert signature_holds(note, vkey)

    for text in proof_log.notes:
        stored = parse_note(text)
        assert stored.origin == note.origin
        assert signature_holds(stored, vkey), text

    # Any change to what is signed, or to the signature, breaks it.
    changed_root = bytes([note.root_hash[0] ^ 1]) + note.root_hash[1:]
    altered_body = note.body.replace(
        base64.b64encode(note.root_hash).decode(), base64.b64encode(changed_root).decode()
    )
    assert altered_body != note.body
    assert not signature_holds(
        Note(**{**note.__dict__, "body": altered_body, "root_hash": changed_root}), vkey
    )
    bad_signature = bytes([note.signature[0] ^ 1]) + note.signature[1:]
    assert not signature_holds(Note(**{**note.__dict__, "signature": bad_signature}), vkey)


BAD_PROOF_INPUTS: Final = [
    ("/v1/audit/proof/inclusion", {"seq": 5, "tree_size": 5}),
    ("/v1/audit/proof/inclusion", {"seq": 9, "tree_size": 5}),
    ("/v1/audit/proof/inclusion", {"seq": 0, "tree_size": FINAL_SIZE + 1}),
    ("/v1/audit/proof/inclusion", {"seq": FINAL_SIZE, "tree_size": FINAL_SIZE + 1}),
    ("/v1/audit/proof/inclusion", {"seq": 0, "tree_size": 2**64}),
    ("/v1/audit/proof/inclusion", {"seq": 10**30, "tree_size": 10**30 + 1}),
    ("/v1/audit/proof/inclusion", {"seq": -1, "tree_size": 5}),
    ("/v1/audit/proof/inclusion", {"seq": 0, "tree_size": 0}),
    ("/v1/audit/proof/inclusion", {"seq": "one", "tree_size": 5}),
    ("/v1/audit/proof/inclusion", {"tree_size": 5}),
    ("/v1/audit/proof/consistency", {"first": 6, "second": 5}),
    ("/v1/audit/proof/consistency", {"first": FINAL_SIZE, "second": 1}),
    ("/v1/audit/proof/consistency", {"first": 0, "second": 5}),
    ("/v1/audit/proof/consistency", {"first": 1, "second": FINAL_SIZE + 1}),
    ("/v1/audit/proof/consistency", {"first": FINAL_SIZE + 1, "second": FINAL_SIZE + 1}),
    ("/v1/audit/proof/consistency", {"first": 1, "second": 2**63}),
    ("/v1/audit/proof/consistency", {"first": 2.5, "second": 5}),
    ("/v1/audit/proof/consistency", {"second": 5}),
]

BAD_LISTING_INPUTS: Final = [
    ("/v1/audit", {"after": -2}),
    ("/v1/audit", {"after": 2**63}),
    ("/v1/audit", {"limit": 0}),
    ("/v1/audit", {"limit": 1001}),
    ("/v1/audit", {"from": "yesterday"}),
    ("/v1/audit", {"action": "no spaces allowed"}),
]


async def _client_errors(app: AuditApp, inputs: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    """The inputs not answered with a 4xx problem: (path, params, status)."""
    failures = []
    for path, params in inputs:
        response = await app.http.get(path, params=params, headers=bearer(app.platform))
        if not 400 <= response.status_code < 500:
            failures.append((path, params, response.status_code))
            continue
        assert_problem(response)
    return failures


async def test_bad_proof_requests_are_client_errors_never_500(proof_log: ProofLog) -> None:
    assert await _client_errors(proof_log.app, BAD_PROOF_INPUTS) == []


async def test_bad_audit_listing_requests_are_client_errors_never_500(
    audit_app: AuditApp,
) -> None:
    assert await _client_errors(audit_app, BAD_LISTING_INPUTS) == []
