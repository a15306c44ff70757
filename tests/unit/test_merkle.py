"""Tests for strongroom.domain.merkle (RFC 9162 Merkle tree math).

Four independent sources of truth:

1. the public transparency-dev/merkle vectors under ``../shared/vectors`` (every file);
2. the project's own known-answer vectors in ``tests/vectors/merkle_kat.json``, which
   hold even where ``shared/`` is absent;
3. Hypothesis properties against a naive MTH/PATH/SUBPROOF written here straight from
   the recursive definitions of RFC 9162 sections 2.1.1, 2.1.3.1 and 2.1.4.1;
4. an independent verifier, also written here from those definitions (it recomputes
   roots by recursing on the tree shape rather than with the RFC's bit loop), which
   must reach the same verdict as the module on every proof.

Nothing below 'Reference implementation' imports the module, so a shared bug cannot
make both sides agree.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from strongroom.domain import merkle
from strongroom.domain.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    CompactRange,
    MemoryTree,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_from_leaf_hashes,
    root_from_nodes,
    verify_consistency,
    verify_inclusion,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "vectors"
MERKLE_VECTORS = SHARED_VECTORS / "transparency-dev-merkle" / "testdata"
KAT_PATH = REPO_ROOT / "tests" / "vectors" / "merkle_kat.json"

# The eight leaves of the RFC 6962 reference test code, used by CT implementations
# and by the transparency-dev vectors.
RFC6962_LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
# Widely published roots (RFC 6962 test code, certificate-transparency-go, trillian).
ROOT_OF_SIZE_1 = "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
ROOT_OF_SIZE_8 = "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"


# ---------------------------------------------------------------------------
# Reference implementation (hashlib only; does not use the module under test)
# ---------------------------------------------------------------------------


def _ref_leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _ref_node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _k(n: int) -> int:
    """The largest power of two strictly smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def naive_mth(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) exactly as RFC 9162 section 2.1.1 defines it, over leaf hashes."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = _k(len(leaves))
    return _ref_node(naive_mth(leaves[:k]), naive_mth(leaves[k:]))


class NaiveTree:
    """MTH, PATH and SUBPROOF by their recursive definitions, memoised on leaf ranges."""

    def __init__(self, leaf_hashes: Sequence[bytes]) -> None:
        self.leaves = list(leaf_hashes)
        self.mth = functools.cache(self._mth)

    def _mth(self, begin: int, end: int) -> bytes:
        n = end - begin
        if n == 0:
            return hashlib.sha256(b"").digest()
        if n == 1:
            return self.leaves[begin]
        k = _k(n)
        return _ref_node(self.mth(begin, begin + k), self.mth(begin + k, end))

    def root(self, size: int) -> bytes:
        return self.mth(0, size)

    def path(self, m: int, begin: int, end: int) -> list[bytes]:
        """PATH(m, D[begin:end]) with m relative to begin."""
        n = end - begin
        if n == 1:
            return []
        k = _k(n)
        if m < k:
            return [*self.path(m, begin, begin + k), self.mth(begin + k, end)]
        return [*self.path(m - k, begin + k, end), self.mth(begin, begin + k)]

    def subproof(self, m: int, begin: int, end: int, b: bool) -> list[bytes]:
        """SUBPROOF(m, D[begin:end], b) with m relative to begin."""
        n = end - begin
        if m == n:
            return [] if b else [self.mth(begin, end)]
        k = _k(n)
        if m <= k:
            return [*self.subproof(m, begin, begin + k, b), self.mth(begin + k, end)]
        return [*self.subproof(m - k, begin + k, end, False), self.mth(begin, begin + k)]

    def inclusion(self, m: int, size: int) -> list[bytes]:
        return self.path(m, 0, size)

    def consistency(self, m: int, size: int) -> list[bytes]:
        return self.subproof(m, 0, size, True)


def _ref_root_from_path(m: int, n: int, leaf: bytes, proof: Sequence[bytes]) -> bytes | None:
    # PATH puts the sibling of the top-level split last, so peel the proof from its end
    # while descending the same recursion that built it.
    if n == 1:
        return leaf if not proof else None
    if not proof:
        return None
    k = _k(n)
    rest, sibling = proof[:-1], proof[-1]
    if m < k:
        sub = _ref_root_from_path(m, k, leaf, rest)
        return None if sub is None else _ref_node(sub, sibling)
    sub = _ref_root_from_path(m - k, n - k, leaf, rest)
    return None if sub is None else _ref_node(sibling, sub)


def ref_verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> bool:
    """Independent inclusion verifier: True iff the proof is valid."""
    if not 0 <= index < size:
        return False
    if len(leaf) != 32 or any(len(p) != 32 for p in proof):
        return False
    return _ref_root_from_path(index, size, leaf, list(proof)) == root


def _ref_roots_from_subproof(
    m: int, n: int, b: bool, proof: Sequence[bytes], first_root: bytes
) -> tuple[bytes, bytes] | None:
    # Returns (hash of this subtree in the old tree, hash in the new tree).
    if m == n:
        if b:
            # The subtree is the whole old tree, whose hash the verifier already holds.
            return (first_root, first_root) if not proof else None
        return (proof[0], proof[0]) if len(proof) == 1 else None
    if not proof:
        return None
    k = _k(n)
    rest, last = proof[:-1], proof[-1]
    if m <= k:
        sub = _ref_roots_from_subproof(m, k, b, rest, first_root)
        if sub is None:
            return None
        # The old tree lies entirely in the left subtree; the right one is all new.
        return sub[0], _ref_node(sub[1], last)
    sub = _ref_roots_from_subproof(m - k, n - k, False, rest, first_root)
    if sub is None:
        return None
    return _ref_node(last, sub[0]), _ref_node(last, sub[1])


def ref_verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Independent consistency verifier: True iff the proof is valid."""
    if first == 0 or first > second:
        return False
    if first == second:
        return not proof and first_root == second_root
    if any(len(x) != 32 for x in (first_root, second_root, *proof)):
        return False
    roots = _ref_roots_from_subproof(first, second, True, list(proof), first_root)
    return roots == (first_root, second_root)


def test_reference_implementation_matches_published_roots() -> None:
    leaves = [_ref_leaf(d) for d in RFC6962_LEAVES]
    assert naive_mth(leaves[:1]).hex() == ROOT_OF_SIZE_1
    assert naive_mth(leaves).hex() == ROOT_OF_SIZE_8
    assert naive_mth([]).hex() == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )


# ---------------------------------------------------------------------------
# 1. Public vectors from transparency-dev/merkle
# ---------------------------------------------------------------------------


def _vector_files() -> list[Path]:
    if not MERKLE_VECTORS.is_dir():
        return []
    return sorted(
        path
        for kind in ("inclusion", "consistency")
        for path in (MERKLE_VECTORS / kind).rglob("*.json")
    )


_VECTOR_FILES = _vector_files()


def _require_shared_vectors() -> None:
    reason = f"public Merkle vectors missing: {MERKLE_VECTORS} (see ../shared/vectors/README.md)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def _b64(value: str) -> bytes:
    return base64.b64decode(value, validate=True)


def _load_vector(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    # Go's JSON encoder writes a nil proof as null and []byte as base64.
    data["proof"] = [_b64(p) for p in data["proof"] or []]
    return data


@pytest.mark.parametrize(
    "path",
    [pytest.param(p, id=p.relative_to(MERKLE_VECTORS).as_posix()) for p in _VECTOR_FILES]
    or [pytest.param(None, id="shared-vectors-missing")],
)
def test_public_vector(path: Path | None) -> None:
    if path is None:
        _require_shared_vectors()
        return
    vec = _load_vector(path)
    want_err = vec["wantErr"]
    assert isinstance(want_err, bool)
    if "leafIdx" in vec:
        index, size = vec["leafIdx"], vec["treeSize"]
        leaf, root = _b64(vec["leafHash"]), _b64(vec["root"])
        independent = ref_verify_inclusion(index, size, leaf, vec["proof"], root)
        if want_err:
            with pytest.raises(ProofError):
                verify_inclusion(index, size, leaf, vec["proof"], root)
        else:
            verify_inclusion(index, size, leaf, vec["proof"], root)
    else:
        first, second = vec["size1"], vec["size2"]
        root1, root2 = _b64(vec["root1"]), _b64(vec["root2"])
        independent = ref_verify_consistency(first, second, root1, root2, vec["proof"])
        if want_err:
            with pytest.raises(ProofError):
                verify_consistency(first, second, root1, root2, vec["proof"])
        else:
            verify_consistency(first, second, root1, root2, vec["proof"])
    assert independent is not want_err, f"independent verifier disagrees on {vec['desc']!r}"


def test_public_vectors_present_and_generated_proofs_match() -> None:
    """Every happy-path vector over the RFC 6962 leaves is reproduced by our generator."""
    if not _VECTOR_FILES:
        _require_shared_vectors()
    kinds = {p.relative_to(MERKLE_VECTORS).parts[0] for p in _VECTOR_FILES}
    assert kinds == {"inclusion", "consistency"}
    tree = MemoryTree([leaf_hash(d) for d in RFC6962_LEAVES])
    roots = {n: tree.root(n) for n in range(1, 9)}
    reproduced = {"inclusion": 0, "consistency": 0}
    verdicts = set()
    for path in _VECTOR_FILES:
        vec = _load_vector(path)
        verdicts.add(vec["wantErr"])
        if vec["wantErr"]:
            continue
        if "leafIdx" in vec:
            size = vec["treeSize"]
            if roots.get(size) != _b64(vec["root"]):
                continue
            assert _b64(vec["leafHash"]) == tree.get_node(0, vec["leafIdx"])
            assert tree.inclusion_proof(vec["leafIdx"], size) == vec["proof"], path
            reproduced["inclusion"] += 1
        else:
            size1, size2 = vec["size1"], vec["size2"]
            if (roots.get(size1), roots.get(size2)) != (_b64(vec["root1"]), _b64(vec["root2"])):
                continue
            assert tree.consistency_proof(size1, size2) == vec["proof"], path
            reproduced["consistency"] += 1
    assert verdicts == {True, False}
    assert reproduced == {"inclusion": 5, "consistency": 5}


# ---------------------------------------------------------------------------
# 2. Project known-answer vectors
# ---------------------------------------------------------------------------


def _load_kat() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(KAT_PATH.read_text(encoding="utf-8"))
    return data


def test_kat_leaves_and_roots() -> None:
    kat = _load_kat()
    leaves = [bytes.fromhex(h) for h in kat["leaves"]]
    assert leaves == RFC6962_LEAVES
    leaf_hashes = [_ref_leaf(d) for d in leaves]
    assert [h.hex() for h in leaf_hashes] == kat["leaf_hashes"]
    assert [leaf_hash(d) for d in leaves] == leaf_hashes

    roots = {int(size): bytes.fromhex(h) for size, h in kat["roots"].items()}
    assert sorted(roots) == list(range(9))
    assert roots[0] == EMPTY_ROOT == hashlib.sha256(b"").digest()
    assert roots[1].hex() == ROOT_OF_SIZE_1
    assert roots[8].hex() == ROOT_OF_SIZE_8

    tree = MemoryTree()
    state = CompactRange()
    assert tree.root() == state.root() == roots[0]
    for size in range(1, 9):
        tree.append(leaf_hashes[size - 1])
        state.append(leaf_hashes[size - 1])
        expected = roots[size]
        assert naive_mth(leaf_hashes[:size]) == expected
        assert root_from_leaf_hashes(leaf_hashes[:size]) == expected
        assert state.root() == expected
        assert tree.root() == expected
    for size in range(9):
        assert tree.root(size) == roots[size]
        assert root_from_nodes(size, tree.get_node) == roots[size]


def test_kat_inclusion_proofs() -> None:
    kat = _load_kat()
    leaf_hashes = [_ref_leaf(bytes.fromhex(h)) for h in kat["leaves"]]
    naive = NaiveTree(leaf_hashes)
    tree = MemoryTree(leaf_hashes)
    roots = {int(size): bytes.fromhex(h) for size, h in kat["roots"].items()}
    assert len(kat["inclusion"]) >= 5
    for case in kat["inclusion"]:
        index, size = case["leaf_index"], case["tree_size"]
        proof = [bytes.fromhex(h) for h in case["proof"]]
        assert naive.inclusion(index, size) == proof
        assert tree.inclusion_proof(index, size) == proof
        verify_inclusion(index, size, leaf_hashes[index], proof, roots[size])
        assert ref_verify_inclusion(index, size, leaf_hashes[index], proof, roots[size])


def test_kat_consistency_proofs() -> None:
    kat = _load_kat()
    leaf_hashes = [_ref_leaf(bytes.fromhex(h)) for h in kat["leaves"]]
    naive = NaiveTree(leaf_hashes)
    tree = MemoryTree(leaf_hashes)
    roots = {int(size): bytes.fromhex(h) for size, h in kat["roots"].items()}
    assert len(kat["consistency"]) >= 5
    for case in kat["consistency"]:
        first, second = case["first"], case["second"]
        proof = [bytes.fromhex(h) for h in case["proof"]]
        assert naive.consistency(first, second) == proof
        assert tree.consistency_proof(first, second) == proof
        verify_consistency(first, second, roots[first], roots[second], proof)
        assert ref_verify_consistency(first, second, roots[first], roots[second], proof)


# ---------------------------------------------------------------------------
# 3. Properties
# ---------------------------------------------------------------------------


def _random_tree(n: int, salt: bytes) -> tuple[list[bytes], NaiveTree, MemoryTree]:
    # The index in every leaf keeps leaves distinct; with two equal neighbours a proof
    # for one would legitimately verify for the other.
    leaves = [_ref_leaf(salt + i.to_bytes(2, "big")) for i in range(n)]
    return leaves, NaiveTree(leaves), MemoryTree(leaves)


_SLOW = settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@_SLOW
@given(n=st.integers(1, 300), salt=st.binary(max_size=8))
@example(n=300, salt=b"")
def test_every_inclusion_proof_verifies(n: int, salt: bytes) -> None:
    leaves, naive, tree = _random_tree(n, salt)
    for size in range(1, n + 1):
        root = naive.root(size)
        assert tree.root(size) == root
        for index in range(size):
            proof = tree.inclusion_proof(index, size)
            verify_inclusion(index, size, leaves[index], proof, root)
            assert _ref_root_from_path(index, size, leaves[index], proof) == root


@_SLOW
@given(n=st.integers(1, 300), salt=st.binary(max_size=8))
@example(n=300, salt=b"")
def test_every_consistency_proof_verifies(n: int, salt: bytes) -> None:
    _, naive, tree = _random_tree(n, salt)
    roots = [naive.root(size) for size in range(n + 1)]
    for second in range(1, n + 1):
        for first in range(1, second + 1):
            proof = tree.consistency_proof(first, second)
            verify_consistency(first, second, roots[first], roots[second], proof)
            assert _ref_roots_from_subproof(first, second, True, proof, roots[first]) == (
                roots[first],
                roots[second],
            )


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 300), salt=st.binary(max_size=8), data=st.data())
def test_generated_proofs_equal_rfc_definitions(n: int, salt: bytes, data: st.DataObject) -> None:
    _, naive, tree = _random_tree(n, salt)
    for _ in range(20):
        size = data.draw(st.integers(1, n))
        index = data.draw(st.integers(0, size - 1))
        assert tree.inclusion_proof(index, size) == naive.inclusion(index, size)
        first = data.draw(st.integers(1, size))
        assert tree.consistency_proof(first, size) == naive.consistency(first, size)


def _flipped(proof: list[bytes], position: int, bit: int) -> list[bytes]:
    element = bytearray(proof[position])
    element[bit // 8] ^= 1 << (bit % 8)
    return [*proof[:position], bytes(element), *proof[position + 1 :]]


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 300), salt=st.binary(max_size=8), data=st.data())
def test_tampered_inclusion_proofs_fail(n: int, salt: bytes, data: st.DataObject) -> None:
    leaves, naive, tree = _random_tree(n, salt)
    size = data.draw(st.integers(1, n), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    root = naive.root(size)
    leaf = leaves[index]
    proof = tree.inclusion_proof(index, size)
    verify_inclusion(index, size, leaf, proof, root)

    def rejected(*args: Any) -> bool:
        try:
            verify_inclusion(*args)
        except ProofError:
            assert not ref_verify_inclusion(*args)
            return True
        return False

    for position in range(len(proof)):
        for bit in range(HASH_SIZE * 8):
            assert rejected(index, size, leaf, _flipped(proof, position, bit), root)
    for bit in range(HASH_SIZE * 8):
        assert rejected(index, size, _flipped([leaf], 0, bit)[0], proof, root)
        assert rejected(index, size, leaf, proof, _flipped([root], 0, bit)[0])
    for other in range(size + 2):
        if other != index:
            assert rejected(other, size, leaf, proof, root)
    # A root does not commit to the size, so only shape-changing sizes must fail;
    # doubling and halving always change the shape of the path.
    for other_size in (size * 2, size // 2):
        if other_size != size:
            assert rejected(index, other_size, leaf, proof, root)
    assert rejected(index, size, leaf, [*proof, root], root)
    assert rejected(index, size, leaf, [root, *proof], root)
    assert rejected(index, size, leaf, [*proof, b""], root)
    assert rejected(index, size, leaf, [b"", *proof], root)
    if proof:
        assert rejected(index, size, leaf, proof[:-1], root)
        assert rejected(index, size, leaf, proof[1:], root)
    if len(proof) > 1:
        assert rejected(index, size, leaf, proof[::-1], root) or proof == proof[::-1]


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 300), salt=st.binary(max_size=8), data=st.data())
def test_tampered_consistency_proofs_fail(n: int, salt: bytes, data: st.DataObject) -> None:
    _, naive, tree = _random_tree(n, salt)
    second = data.draw(st.integers(2, n), label="second")
    first = data.draw(st.integers(1, second - 1), label="first")
    root1, root2 = naive.root(first), naive.root(second)
    proof = tree.consistency_proof(first, second)
    verify_consistency(first, second, root1, root2, proof)

    def rejected(*args: Any) -> bool:
        try:
            verify_consistency(*args)
        except ProofError:
            assert not ref_verify_consistency(*args)
            return True
        return False

    for position in range(len(proof)):
        for bit in range(HASH_SIZE * 8):
            assert rejected(first, second, root1, root2, _flipped(proof, position, bit))
    for bit in range(HASH_SIZE * 8):
        assert rejected(first, second, _flipped([root1], 0, bit)[0], root2, proof)
        assert rejected(first, second, root1, _flipped([root2], 0, bit)[0], proof)
    for other in range(second + 2):
        if other != first:
            assert rejected(other, second, root1, root2, proof)
    for other_size in (second * 2, second // 2):
        assert rejected(first, other_size, root1, root2, proof)
    assert rejected(first, second, root2, root1, proof)
    assert rejected(first, second, root1, root2, [])
    for garbage in (b"", root1, root2, proof[0]):
        assert rejected(first, second, root1, root2, [*proof, garbage])
        assert rejected(first, second, root1, root2, [garbage, *proof])
    assert rejected(first, second, root1, root2, proof[:-1])


@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 300), salt=st.binary(max_size=8), data=st.data())
def test_incremental_roots_and_resume(n: int, salt: bytes, data: st.DataObject) -> None:
    leaves, naive, _ = _random_tree(n, salt)
    cut = data.draw(st.integers(0, n), label="cut")
    state = CompactRange()
    seen: dict[tuple[int, int], bytes] = {}

    def visit(level: int, index: int, value: bytes) -> None:
        assert (level, index) not in seen
        seen[(level, index)] = value

    assert state.root() == naive.root(0)
    for size, leaf in enumerate(leaves[:cut], start=1):
        state.append(leaf, visit)
        assert state.size == size
        assert state.root() == naive.root(size)

    # Persist as text, the way a store would, and carry on from the restored copy.
    size, hashes = state.state()
    saved = json.dumps({"size": size, "hashes": [h.hex() for h in hashes]})
    loaded = json.loads(saved)
    resumed = CompactRange.from_state(loaded["size"], [bytes.fromhex(h) for h in loaded["hashes"]])
    assert resumed == state
    assert resumed.root() == state.root()
    for size, leaf in enumerate(leaves[cut:], start=cut + 1):
        resumed.append(leaf, visit)
        state.append(leaf)
        assert resumed.root() == state.root() == naive.root(size)
    assert resumed == state
    assert len(resumed.hashes) == n.bit_count()

    # Every complete subtree was reported exactly once, with its MTH.
    expected_nodes = {(level, index) for level in range(10) for index in range(n >> level)}
    assert set(seen) == expected_nodes
    for (level, index), value in seen.items():
        assert value == naive.mth(index << level, (index + 1) << level)


# ---------------------------------------------------------------------------
# 4. API contracts and misuse
# ---------------------------------------------------------------------------


def test_hash_primitives() -> None:
    assert HASH_SIZE == 32
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert leaf_hash(b"").hex() == ROOT_OF_SIZE_1
    a, b = _ref_leaf(b"a"), _ref_leaf(b"b")
    assert node_hash(a, b) == _ref_node(a, b) != node_hash(b, a)
    # The domain separation: a leaf whose data looks like two children is not a node.
    assert leaf_hash(a + b) != node_hash(a, b)
    assert root_from_leaf_hashes([]) == EMPTY_ROOT
    assert MemoryTree().root() == MemoryTree().root(0) == EMPTY_ROOT


def test_proof_generation_rejects_bad_arguments() -> None:
    tree = MemoryTree([_ref_leaf(bytes([i])) for i in range(5)])
    for index, size in [(5, 5), (0, 0), (-1, 5), (0, 6)]:
        with pytest.raises(ValueError, match=r"leaf_index|tree|size"):
            tree.inclusion_proof(index, size)
    with pytest.raises(ValueError, match="empty tree"):
        tree.consistency_proof(0, 3)
    with pytest.raises(ValueError, match="larger"):
        tree.consistency_proof(4, 3)
    with pytest.raises(ValueError, match="not 6"):
        tree.consistency_proof(1, 6)
    with pytest.raises(ValueError, match="not 6"):
        tree.root(6)
    assert tree.consistency_proof(3, 3) == []
    assert tree.consistency_proof(5) == consistency_proof(5, 5, tree.get_node) == []
    with pytest.raises(ValueError, match="integer"):
        inclusion_proof(True, 2, tree.get_node)  # type: ignore[arg-type]
    with pytest.raises(LookupError):
        tree.get_node(0, 5)
    with pytest.raises(LookupError):
        tree.get_node(3, 0)
    with pytest.raises(ValueError, match="32-byte"):
        inclusion_proof(0, 2, lambda level, index: b"short")
    with pytest.raises(ValueError, match="32 bytes"):
        tree.append(b"short")
    assert tree.size == len(tree) == 5
    assert tree.append_data(b"x") == 5
    assert tree.get_node(0, 5) == _ref_leaf(b"x")


def test_verifiers_reject_malformed_input_with_proof_error() -> None:
    leaves = [_ref_leaf(bytes([i])) for i in range(6)]
    tree = MemoryTree(leaves)
    root = tree.root()
    proof = tree.inclusion_proof(2, 6)
    verify_inclusion(2, 6, leaves[2], proof, root)
    for bad_index in (-1, 6, True, 2**64, "2"):
        with pytest.raises(ProofError):
            verify_inclusion(bad_index, 6, leaves[2], proof, root)  # type: ignore[arg-type]
    for bad_size in (-6, 2**64 + 6, None):
        with pytest.raises(ProofError):
            verify_inclusion(2, bad_size, leaves[2], proof, root)  # type: ignore[arg-type]
    with pytest.raises(ProofError, match="leaf hash"):
        verify_inclusion(2, 6, leaves[2][:31], proof, root)
    with pytest.raises(ProofError, match="proof element 1"):
        verify_inclusion(2, 6, leaves[2], [proof[0], proof[1] + b"\x00", proof[2]], root)
    with pytest.raises(ProofError, match="length"):
        verify_inclusion(2, 6, leaves[2], proof[:2], root)
    with pytest.raises(ProofError, match="root"):
        verify_inclusion(2, 6, leaves[2], proof, root[:31])

    r3 = tree.root(3)
    cproof = tree.consistency_proof(3, 6)
    verify_consistency(3, 6, r3, root, cproof)
    with pytest.raises(ProofError, match="larger"):
        verify_consistency(6, 3, root, r3, cproof)
    with pytest.raises(ProofError, match="empty tree"):
        verify_consistency(0, 6, EMPTY_ROOT, root, [])
    with pytest.raises(ProofError, match="empty tree"):
        verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    with pytest.raises(ProofError, match="not empty"):
        verify_consistency(6, 6, root, root, cproof)
    with pytest.raises(ProofError, match="differ"):
        verify_consistency(6, 6, root, r3, [])
    with pytest.raises(ProofError, match="32-byte"):
        verify_consistency(3, 6, r3[:16], root, cproof)
    verify_consistency(6, 6, root, root, [])
    verify_consistency(6, 6, root, root, None)


def test_historical_sizes_use_only_complete_subtrees() -> None:
    leaves = [_ref_leaf(bytes([i])) for i in range(21)]
    tree = MemoryTree(leaves)
    naive = NaiveTree(leaves)
    asked: list[tuple[int, int]] = []

    def get_node(level: int, index: int) -> bytes:
        # A complete subtree ends at or before the current size; the log must never
        # be asked for a node it cannot have.
        assert (index + 1) << level <= 21
        asked.append((level, index))
        return tree.get_node(level, index)

    for size in range(1, 22):
        for index in range(size):
            asked.clear()
            assert inclusion_proof(index, size, get_node) == naive.inclusion(index, size)
            # PATH needs one sibling per level plus the right edge below it.
            assert len(asked) <= 2 * size.bit_length()
        for first in range(1, size + 1):
            asked.clear()
            assert consistency_proof(first, size, get_node) == naive.consistency(first, size)
            assert len(asked) <= 2 * size.bit_length() + 1
        assert root_from_nodes(size, get_node) == naive.root(size)


def test_compact_range_state_validation() -> None:
    state = CompactRange()
    for i in range(11):
        state.append(_ref_leaf(bytes([i])))
    size, hashes = state.state()
    assert size == 11
    assert len(hashes) == 3
    assert CompactRange.from_state(size, hashes) == state
    assert state.copy() == state
    assert state != CompactRange()
    with pytest.raises(ValueError, match="3 right-edge hashes"):
        CompactRange.from_state(11, hashes[:2])
    with pytest.raises(ValueError, match="32 bytes"):
        CompactRange.from_state(11, [*hashes[:2], b"x"])
    with pytest.raises(ValueError, match="integer"):
        CompactRange.from_state(-1, [])
    assert CompactRange.from_state(0, []).root() == EMPTY_ROOT
    assert "size=11" in repr(state)


def test_failing_visitor_leaves_range_unchanged() -> None:
    state = CompactRange()
    for i in range(7):
        state.append(_ref_leaf(bytes([i])))
    before = state.state()

    def refuse(level: int, index: int, value: bytes) -> None:
        if level == 3:
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        state.append(_ref_leaf(b"\x07"), refuse)
    assert state.state() == before
    state.append(_ref_leaf(b"\x07"))
    assert state.root() == naive_mth([_ref_leaf(bytes([i])) for i in range(8)])


def test_public_api() -> None:
    assert set(merkle.__all__) >= {
        "HASH_SIZE",
        "EMPTY_ROOT",
        "leaf_hash",
        "node_hash",
        "root_from_leaf_hashes",
        "CompactRange",
        "inclusion_proof",
        "consistency_proof",
        "verify_inclusion",
        "verify_consistency",
        "ProofError",
        "MemoryTree",
    }
    assert issubclass(ProofError, ValueError)
