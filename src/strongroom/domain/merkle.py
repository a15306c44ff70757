"""Merkle tree math of RFC 9162 (Certificate Transparency v2), the same tree as RFC 6962.

Pure functions over SHA-256 (``hashlib`` only); nothing here does I/O. The audit log
builds on this module: it persists the :class:`CompactRange` state and the hashes of
complete subtrees, and serves proofs through a ``get_node`` callable.

Rules
-----
* Hashes are 32-byte SHA-256 digests. A leaf hash is ``SHA-256(0x00 || data)``, an
  interior node is ``SHA-256(0x01 || left || right)``, and the root of the empty tree
  is ``SHA-256(b"")`` (RFC 9162 section 2.1.1). The distinct prefixes stop a leaf
  from being passed off as an interior node.
* Sizes and indexes are integers in ``[0, 2**64)``, as in the RFC's ``uint64``
  fields. Leaves are numbered from 0.
* A *node* ``(level, index)`` is the root of the complete (perfect) subtree over
  leaves ``[index * 2**level, (index + 1) * 2**level)``; level 0 holds the leaf
  hashes. Such a node never changes once its last leaf is appended, so one
  ``get_node`` serves proofs for every tree size up to the current one.
* Proof generation follows PATH (section 2.1.3.1) and SUBPROOF (section 2.1.4.1)
  and asks ``get_node`` for O(log n) nodes. A consistency proof is defined for
  ``0 < first <= second``; for ``first == second`` it is empty.
* Verification follows the algorithms of sections 2.1.3.2 and 2.1.4.2 step by step,
  after checking that the leaf hash, the roots and every proof element have 32 bytes
  and that the proof has exactly the length the sizes imply, so truncated or padded
  proofs fail before any hashing, with a clear message. Every verification failure
  raises :class:`ProofError` (a ``ValueError``); success returns ``None``.
* A consistency proof from size 0 is rejected, even when empty: every tree extends
  the empty tree, so such a "proof" proves nothing and a caller that asks for one
  has a bug. Equal sizes (``first == second > 0``) verify exactly when the proof is
  empty and the two roots are byte-for-byte equal; nothing is hashed in that case,
  so the roots' length is not checked (the transparency-dev vectors require this).
* A root hash does not commit to the tree size, so a proof can also verify for
  another size whose tree has the same shape along the proven path. Whoever relies
  on a proof must take size and root together from one signed tree head.
* Misuse of the generating side (an index outside the tree, a missing node) raises
  ``ValueError`` or ``LookupError``, never a silently wrong proof.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MAX_TREE_SIZE",
    "CompactRange",
    "GetNode",
    "MemoryTree",
    "NodeVisitor",
    "ProofError",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_from_leaf_hashes",
    "root_from_nodes",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
#: Largest tree size accepted; the RFC encodes sizes as uint64.
MAX_TREE_SIZE = (1 << 64) - 1

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"

EMPTY_ROOT: bytes = hashlib.sha256(b"").digest()

#: ``get_node(level, index)`` returns the hash of a complete subtree (see module rules).
GetNode = Callable[[int, int], bytes]
#: ``visit(level, index, hash)`` is told about each complete subtree as it comes into being.
NodeVisitor = Callable[[int, int, bytes], None]


class ProofError(ValueError):
    """A Merkle proof, or the sizes, indexes and hashes given with it, did not verify."""


def leaf_hash(data: bytes) -> bytes:
    """Return the RFC 9162 leaf hash ``SHA-256(0x00 || data)``."""
    return hashlib.sha256(_LEAF_PREFIX + bytes(data)).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the RFC 9162 interior node hash ``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------


def _is_uint64(value: object) -> bool:
    # bool is an int subclass; a True index is a caller bug, not index 1.
    return type(value) is int and 0 <= value <= MAX_TREE_SIZE


def _require_size(name: str, value: int) -> None:
    if not _is_uint64(value):
        raise ValueError(f"{name} must be an integer in [0, 2**64), got {value!r}")


def _require_hash(name: str, value: bytes) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview) or len(value) != HASH_SIZE:
        raise ValueError(f"{name} must be {HASH_SIZE} bytes")
    return bytes(value)


def _largest_power_of_two_below(n: int) -> int:
    """Return the k of RFC 9162: the largest power of two strictly smaller than n > 1."""
    return 1 << ((n - 1).bit_length() - 1)


def _fold_right(hashes: Sequence[bytes]) -> bytes:
    """Hash perfect-subtree roots, ordered left to right and largest first, into one root.

    The MTH of a range splits off the largest power of two on the left and recurses on
    the rest, so the rightmost (smallest) subtrees are combined first.
    """
    if not hashes:
        return EMPTY_ROOT
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = node_hash(left, result)
    return result


def _fetch(get_node: GetNode, level: int, index: int) -> bytes:
    value = get_node(level, index)
    # Storage hands back what it was given; a wrong-sized value means corruption,
    # and a proof built from it would fail far away from the cause.
    if not isinstance(value, bytes | bytearray | memoryview) or len(value) != HASH_SIZE:
        raise ValueError(f"get_node({level}, {index}) did not return a {HASH_SIZE}-byte hash")
    return bytes(value)


def _range_hash(begin: int, end: int, get_node: GetNode) -> bytes:
    """Return MTH of leaves ``[begin, end)`` using O(log n) complete-subtree lookups.

    Callers only pass ranges that occur in the RFC recursion, whose start is aligned to
    the smallest power of two not below their length; the greedy split into aligned
    perfect subtrees then matches the MTH split exactly.
    """
    parts: list[bytes] = []
    while begin < end:
        # The largest aligned block at ``begin`` that still fits inside the range.
        size = begin & -begin if begin else 1 << (end - begin).bit_length()
        while begin + size > end:
            size >>= 1
        level = size.bit_length() - 1
        parts.append(_fetch(get_node, level, begin >> level))
        begin += size
    return _fold_right(parts)


# ---------------------------------------------------------------------------
# Roots and incremental state
# ---------------------------------------------------------------------------


class CompactRange:
    """The right edge of a tree of ``size`` leaves: one subtree root per set bit of size.

    ``hashes[0]`` covers the largest (leftmost) complete subtree and ``hashes[-1]`` the
    smallest, as in transparency-dev/merkle's ``compact.Range`` for ``[0, size)``.
    ``append`` costs O(1) amortised hashes (O(log n) worst case), ``root`` O(log n).
    Persist ``(size, hashes)`` and restore with :meth:`from_state` to resume without
    rereading the leaves.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self) -> None:
        self._size = 0
        self._hashes: list[bytes] = []

    @classmethod
    def from_state(cls, size: int, hashes: Sequence[bytes]) -> CompactRange:
        """Rebuild a range from a persisted size and its right-edge hashes."""
        _require_size("size", size)
        if len(hashes) != size.bit_count():
            raise ValueError(
                f"a tree of size {size} has {size.bit_count()} right-edge hashes, got {len(hashes)}"
            )
        state = cls()
        state._size = size
        state._hashes = [_require_hash("right-edge hash", h) for h in hashes]
        return state

    @classmethod
    def from_nodes(cls, size: int, get_node: GetNode) -> CompactRange:
        """Rebuild the range of ``size`` leaves from stored complete-subtree hashes."""
        _require_size("size", size)
        hashes = []
        begin = 0
        for level in range(size.bit_length() - 1, -1, -1):
            if size >> level & 1:
                hashes.append(_fetch(get_node, level, begin >> level))
                begin += 1 << level
        return cls.from_state(size, hashes)

    @property
    def size(self) -> int:
        """Number of leaves appended so far."""
        return self._size

    @property
    def hashes(self) -> list[bytes]:
        """A copy of the right-edge hashes, largest subtree first."""
        return list(self._hashes)

    def state(self) -> tuple[int, list[bytes]]:
        """Return ``(size, hashes)``, the input of :meth:`from_state`."""
        return self._size, list(self._hashes)

    def copy(self) -> CompactRange:
        """Return an independent copy."""
        return CompactRange.from_state(self._size, self._hashes)

    def append(self, leaf: bytes, visit: NodeVisitor | None = None) -> None:
        """Append one leaf hash; ``visit`` sees the leaf and every subtree it completes.

        The range changes only after ``visit`` has returned for every new node, so a
        visitor that fails (say, a storage write) leaves the range as it was.
        """
        current = _require_hash("leaf hash", leaf)
        if self._size >= MAX_TREE_SIZE:
            raise ValueError("tree is full")
        index = self._size
        level = 0
        keep = len(self._hashes)
        completed = [(0, index, current)]
        # Each trailing 1-bit of the old size is a complete subtree of the same height
        # as the one just finished on its right; merging them carries like binary +1.
        while index & 1:
            keep -= 1
            current = node_hash(self._hashes[keep], current)
            index >>= 1
            level += 1
            completed.append((level, index, current))
        if visit is not None:
            for node_level, node_index, value in completed:
                visit(node_level, node_index, value)
        del self._hashes[keep:]
        self._hashes.append(current)
        self._size += 1

    def root(self) -> bytes:
        """Return the Merkle Tree Hash of the leaves appended so far."""
        return _fold_right(self._hashes)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CompactRange):
            return NotImplemented
        return self._size == other._size and self._hashes == other._hashes

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"CompactRange(size={self._size}, root={self.root().hex()[:16]}...)"


def root_from_leaf_hashes(leaf_hashes: Sequence[bytes]) -> bytes:
    """Return MTH (RFC 9162 section 2.1.1) of a list of leaf hashes."""
    state = CompactRange()
    for leaf in leaf_hashes:
        state.append(leaf)
    return state.root()


def root_from_nodes(tree_size: int, get_node: GetNode) -> bytes:
    """Return the root of the tree of ``tree_size`` leaves from complete-subtree hashes."""
    _require_size("tree_size", tree_size)
    return _range_hash(0, tree_size, get_node)


# ---------------------------------------------------------------------------
# Proof generation
# ---------------------------------------------------------------------------


def inclusion_proof(leaf_index: int, tree_size: int, get_node: GetNode) -> list[bytes]:
    """Return PATH(leaf_index, D[tree_size]) of RFC 9162 section 2.1.3.1, bottom-up.

    ``tree_size`` may be any size up to what ``get_node`` can serve, so a log can
    prove inclusion in an older tree head.
    """
    _require_size("leaf_index", leaf_index)
    _require_size("tree_size", tree_size)
    if leaf_index >= tree_size:
        raise ValueError(f"leaf_index {leaf_index} is not below tree_size {tree_size}")
    top_down: list[bytes] = []
    begin, end = 0, tree_size
    # Walk from the root towards the leaf; at each split the sibling range is one
    # element of the proof, and the RFC lists those from the leaf upwards.
    while end - begin > 1:
        split = begin + _largest_power_of_two_below(end - begin)
        if leaf_index < split:
            top_down.append(_range_hash(split, end, get_node))
            end = split
        else:
            top_down.append(_range_hash(begin, split, get_node))
            begin = split
    top_down.reverse()
    return top_down


def consistency_proof(first: int, second: int, get_node: GetNode) -> list[bytes]:
    """Return PROOF(first, D[second]) of RFC 9162 section 2.1.4.1.

    Requires ``0 < first <= second``; equal sizes give the empty proof.
    """
    _require_size("first", first)
    _require_size("second", second)
    if first > second:
        raise ValueError(f"first {first} is larger than second {second}")
    if first == 0:
        raise ValueError("a consistency proof from the empty tree is undefined")
    top_down: list[bytes] = []
    begin, end = 0, second
    # ``whole`` is SUBPROOF's b flag: true while the node under consideration is on
    # the left edge, whose old hash the verifier already holds as first_root.
    whole = True
    while first != end:
        split = begin + _largest_power_of_two_below(end - begin)
        if first <= split:
            top_down.append(_range_hash(split, end, get_node))
            end = split
        else:
            top_down.append(_range_hash(begin, split, get_node))
            begin = split
            whole = False
    if not whole:
        top_down.append(_range_hash(begin, end, get_node))
    top_down.reverse()
    return top_down


# ---------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------


def _check_size(name: str, value: int) -> None:
    if not _is_uint64(value):
        raise ProofError(f"{name} is not an integer in [0, 2**64)")


def _check_proof(proof: Sequence[bytes] | None) -> list[bytes]:
    if proof is None:
        return []
    out: list[bytes] = []
    for position, element in enumerate(proof):
        if not isinstance(element, bytes | bytearray | memoryview) or len(element) != HASH_SIZE:
            raise ProofError(f"proof element {position} is not a {HASH_SIZE}-byte hash")
        out.append(bytes(element))
    return out


def _same(a: bytes, b: bytes) -> bool:
    # Constant-time comparison costs nothing here and keeps timing out of the picture.
    return hmac.compare_digest(bytes(a), bytes(b))


def _inclusion_proof_length(leaf_index: int, tree_size: int) -> int:
    # Below the level where the paths to leaf_index and to the last leaf part, every
    # level contributes a sibling; above it, only levels where leaf_index goes right.
    inner = (leaf_index ^ (tree_size - 1)).bit_length()
    border = (leaf_index >> inner).bit_count()
    return inner + border


def _consistency_proof_length(first: int, second: int) -> int:
    # The proof is the inclusion proof of leaf first-1 in the tree of second with the
    # levels under the largest perfect subtree ending at first cut off, plus that
    # subtree's root unless it is the whole old tree (first is a power of two).
    shift = (first & -first).bit_length() - 1
    inner = ((first - 1) ^ (second - 1)).bit_length() - shift
    border = ((first - 1) >> (inner + shift)).bit_count()
    seed = 0 if first == 1 << shift else 1
    return seed + inner + border


def verify_inclusion(
    leaf_index: int,
    tree_size: int,
    leaf_hash: bytes,
    proof: Sequence[bytes] | None,
    root: bytes,
) -> None:
    """Check an inclusion proof by RFC 9162 section 2.1.3.2; raise ProofError if it fails."""
    _check_size("leaf_index", leaf_index)
    _check_size("tree_size", tree_size)
    # Step 1.
    if leaf_index >= tree_size:
        raise ProofError("leaf_index is not below tree_size")
    if not isinstance(leaf_hash, bytes | bytearray | memoryview) or len(leaf_hash) != HASH_SIZE:
        raise ProofError(f"leaf hash is not a {HASH_SIZE}-byte hash")
    path = _check_proof(proof)
    if len(path) != _inclusion_proof_length(leaf_index, tree_size):
        raise ProofError("inclusion proof has the wrong length for these sizes")

    # Step 2 and 3.
    fn, sn = leaf_index, tree_size - 1
    r = bytes(leaf_hash)
    # Step 4.
    for p in path:
        if sn == 0:
            raise ProofError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            # "If LSB(fn) is not set, right-shift both until LSB(fn) is set or fn is 0."
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    # Step 5.
    if sn != 0:
        raise ProofError("inclusion proof is too short")
    if not _same(r, root):
        raise ProofError("inclusion proof does not lead to the given root")


def verify_consistency(
    first: int,
    second: int,
    first_root: bytes,
    second_root: bytes,
    proof: Sequence[bytes] | None,
) -> None:
    """Check a consistency proof by RFC 9162 section 2.1.4.2; raise ProofError if it fails."""
    _check_size("first", first)
    _check_size("second", second)
    if first > second:
        raise ProofError("first tree size is larger than the second")
    path = _check_proof(proof)
    if first == 0:
        raise ProofError("a consistency proof from the empty tree proves nothing")
    if first == second:
        # The RFC defines proofs for first < second only; a tree is consistent with
        # itself when nothing is offered as proof and the heads agree.
        if path:
            raise ProofError("sizes are equal but the proof is not empty")
        if not _same(first_root, second_root):
            raise ProofError("sizes are equal but the roots differ")
        return
    if len(first_root) != HASH_SIZE or len(second_root) != HASH_SIZE:
        raise ProofError(f"tree roots must be {HASH_SIZE}-byte hashes")
    if len(path) != _consistency_proof_length(first, second):
        raise ProofError("consistency proof has the wrong length for these sizes")

    # Step 1.
    if not path:
        raise ProofError("consistency proof is empty")
    # Step 2.
    if first & (first - 1) == 0:
        path.insert(0, bytes(first_root))
    # Step 3.
    fn, sn = first - 1, second - 1
    # Step 4.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # Step 5.
    fr = sr = path[0]
    # Step 6.
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    # Step 7.
    if sn != 0:
        raise ProofError("consistency proof is too short")
    if not _same(fr, first_root):
        raise ProofError("consistency proof does not lead to the first root")
    if not _same(sr, second_root):
        raise ProofError("consistency proof does not lead to the second root")


# ---------------------------------------------------------------------------
# In-memory tree
# ---------------------------------------------------------------------------


class MemoryTree:
    """A whole tree in memory: every complete-subtree hash, by level and index.

    Meant for tests and small tools; the audit log keeps the same nodes in storage
    and calls the module functions with its own ``get_node``.
    """

    __slots__ = ("_levels", "_range")

    def __init__(self, leaf_hashes: Sequence[bytes] = ()) -> None:
        self._levels: list[list[bytes]] = []
        self._range = CompactRange()
        for leaf in leaf_hashes:
            self.append(leaf)

    @property
    def size(self) -> int:
        """Number of leaves."""
        return self._range.size

    def __len__(self) -> int:
        return self._range.size

    def compact_range(self) -> CompactRange:
        """A copy of the current right edge."""
        return self._range.copy()

    def _store(self, level: int, index: int, value: bytes) -> None:
        if level == len(self._levels):
            self._levels.append([])
        # Nodes complete strictly left to right on every level, so appending keeps
        # list position equal to node index.
        self._levels[level].append(value)

    def append(self, leaf: bytes) -> int:
        """Append a leaf hash and return its index."""
        index = self._range.size
        self._range.append(leaf, self._store)
        return index

    def append_data(self, data: bytes) -> int:
        """Append ``leaf_hash(data)`` and return its index."""
        return self.append(leaf_hash(data))

    def get_node(self, level: int, index: int) -> bytes:
        """Return the hash of complete subtree ``(level, index)``; LookupError if absent."""
        if 0 <= level < len(self._levels) and 0 <= index < len(self._levels[level]):
            return self._levels[level][index]
        raise LookupError(f"no complete subtree at level {level}, index {index}")

    def _size_or_current(self, size: int | None) -> int:
        if size is None:
            return self._range.size
        _require_size("size", size)
        if size > self._range.size:
            raise ValueError(f"tree has {self._range.size} leaves, not {size}")
        return size

    def root(self, size: int | None = None) -> bytes:
        """Root of the tree of ``size`` leaves (default: all of them)."""
        if size is None:
            return self._range.root()
        return root_from_nodes(self._size_or_current(size), self.get_node)

    def inclusion_proof(self, leaf_index: int, size: int | None = None) -> list[bytes]:
        """Inclusion proof of ``leaf_index`` in the tree of ``size`` leaves."""
        return inclusion_proof(leaf_index, self._size_or_current(size), self.get_node)

    def consistency_proof(self, first: int, second: int | None = None) -> list[bytes]:
        """Consistency proof between the trees of ``first`` and ``second`` leaves."""
        return consistency_proof(first, self._size_or_current(second), self.get_node)
