"""The audit trail's records and its verification, as pure rules.

Rules:
1. Record n is leaf n of an RFC 9162 Merkle tree. Its leaf data is the
   record's canonical JSON (sorted keys, no spaces, ASCII), which includes its
   sequence number and ``prev``, the leaf hash of record n-1 (32 zero bytes for
   record 0): a hash chain inside the tree.
2. Details never carry secrets or card data: strings are PAN-masked and
   secret-named keys are dropped before a record is built.
3. Verification names the first damaged sequence number and the kind of
   damage: ``missing`` (a gap), ``reordered`` (a record at another record's
   place), ``modified`` (content or hash changed), ``inserted`` (a chain break
   from a foreign record), ``truncated`` (a checkpoint covers more records than
   remain), ``bad_checkpoint`` (a signature or root that does not hold).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Literal

from strongroom.domain.cards import mask_pans
from strongroom.domain.checkpoints import SignedCheckpoint
from strongroom.domain.merkle import CompactRange, leaf_hash

GENESIS_PREV: Final = b"\x00" * 32
_DROPPED_DETAIL_KEYS: Final = frozenset(
    {"key", "secret", "token", "password", "authorization", "number", "pan", "cvv"}
)

Outcome = Literal["success", "failure"]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """What a service reports; the log adds sequence, time and chain."""

    action: str
    actor: str
    outcome: Outcome = "success"
    tenant: str | None = None
    ip: str | None = None
    request_id: str | None = None
    resource: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    seq: int
    time: float
    entry: AuditEntry
    prev: bytes
    data: bytes
    leaf: bytes

    def view(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "time": self.time,
            "tenant": self.entry.tenant,
            "actor": self.entry.actor,
            "action": self.entry.action,
            "outcome": self.entry.outcome,
            "origin": {"ip": self.entry.ip, "request_id": self.entry.request_id},
            "resource": self.entry.resource,
            "details": dict(self.entry.details),
            "leaf_hash": self.leaf.hex(),
        }


def clean_details(details: Mapping[str, Any]) -> dict[str, Any]:
    """Details safe to keep forever: no secret-named keys, no card numbers, plain types."""
    cleaned: dict[str, Any] = {}
    for key, value in details.items():
        if key.lower() in _DROPPED_DETAIL_KEYS:
            continue
        cleaned[mask_pans(str(key))] = _clean_value(value)
    return cleaned


def _clean_value(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return value if abs(value) < 10**12 else mask_pans(str(value))
    if isinstance(value, Mapping):
        return clean_details(value)
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean_value(item) for item in value]
    return mask_pans(str(value))


def canonical(seq: int, time: float, entry: AuditEntry, prev: bytes) -> bytes:
    """The leaf data of a record: deterministic JSON of every field."""
    document = {
        "seq": seq,
        "time": round(time, 6),
        "tenant": entry.tenant,
        "actor": entry.actor,
        "action": entry.action,
        "outcome": entry.outcome,
        "origin": {"ip": entry.ip, "request_id": entry.request_id},
        "resource": entry.resource,
        "details": dict(entry.details),
        "prev": prev.hex(),
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def build(seq: int, time: float, entry: AuditEntry, prev: bytes) -> AuditRecord:
    clean = AuditEntry(
        action=entry.action, actor=entry.actor, outcome=entry.outcome, tenant=entry.tenant,
        ip=entry.ip, request_id=entry.request_id, resource=entry.resource,
        details=clean_details(entry.details),
    )  # fmt: skip
    data = canonical(seq, time, clean, prev)
    return AuditRecord(seq, round(time, 6), clean, prev, data, leaf_hash(data))


def parse_data(data: bytes) -> tuple[int, float, AuditEntry, bytes]:
    """Decode leaf data back into its parts.

    Raises:
        ValueError: the data is not a record's canonical JSON.
    """
    document = json.loads(data)
    origin = document["origin"]
    entry = AuditEntry(
        action=document["action"], actor=document["actor"], outcome=document["outcome"],
        tenant=document["tenant"], ip=origin["ip"], request_id=origin["request_id"],
        resource=document["resource"], details=document["details"],
    )  # fmt: skip
    prev = bytes.fromhex(document["prev"])
    if canonical(document["seq"], document["time"], entry, prev) != data:
        raise ValueError("the record is not in canonical form")
    return document["seq"], document["time"], entry, prev


class Damage(StrEnum):
    MISSING = "missing"
    REORDERED = "reordered"
    MODIFIED = "modified"
    INSERTED = "inserted"
    TRUNCATED = "truncated"
    BAD_CHECKPOINT = "bad_checkpoint"


@dataclass(frozen=True, slots=True)
class Finding:
    seq: int
    damage: Damage
    detail: str

    def __str__(self) -> str:
        return f"seq {self.seq}: {self.damage.value}: {self.detail}"


@dataclass(frozen=True, slots=True)
class StoredRow:
    """A row as the store holds it: its place, its data and the hash stored beside it."""

    seq: int
    data: bytes
    leaf: bytes


@dataclass(slots=True)
class Verification:
    records: int = 0
    checkpoints: int = 0
    finding: Finding | None = None
    unsigned_tail: int = 0

    @property
    def ok(self) -> bool:
        return self.finding is None


class LogVerifier:
    """Recomputes the tree over stored rows fed in order and checks every checkpoint.

    ``check_signature(signed) -> bool`` verifies one checkpoint's signature.
    ``start``/``start_prev`` resume after pruned records (the range at the prune
    horizon and the last pruned leaf hash). The first damage found ends the run.
    """

    def __init__(
        self,
        checkpoints: list[SignedCheckpoint],
        check_signature: Callable[[SignedCheckpoint], bool],
        *,
        start: CompactRange | None = None,
        start_prev: bytes = GENESIS_PREV,
    ) -> None:
        self.result = Verification()
        self._tree = start.copy() if start is not None else CompactRange()
        self._start_size = self._tree.size
        self._prev = start_prev
        self._signed_sizes = [c.checkpoint.tree_size for c in checkpoints]
        for signed in checkpoints:
            if not check_signature(signed):
                self.result.finding = Finding(
                    signed.checkpoint.tree_size, Damage.BAD_CHECKPOINT,
                    f"the checkpoint at size {signed.checkpoint.tree_size} has an invalid "
                    "signature",
                )  # fmt: skip
                break
        ordered = sorted(checkpoints, key=lambda c: c.checkpoint.tree_size)
        self._due = [c for c in ordered if c.checkpoint.tree_size > self._tree.size]

    def feed(self, row: StoredRow) -> bool:
        """Check one row; False once damage has been found."""
        if self.result.finding is not None:
            return False
        finding = _check_row(row, self._tree.size, self._prev)
        if finding is not None:
            self.result.finding = finding
            return False
        self._tree.append(row.leaf)
        self._prev = row.leaf
        self.result.records += 1
        while self._due and self._due[0].checkpoint.tree_size == self._tree.size:
            signed = self._due.pop(0)
            if signed.checkpoint.root_hash != self._tree.root():
                self.result.finding = Finding(
                    self._tree.size - 1, Damage.MODIFIED,
                    f"records up to seq {self._tree.size - 1} do not match the signed "
                    f"checkpoint at size {self._tree.size}",
                )  # fmt: skip
                return False
            self.result.checkpoints += 1
        return True

    def finish(self) -> Verification:
        """The verdict once every row was fed."""
        if self.result.finding is None and self._due:
            covered = self._due[0].checkpoint.tree_size
            self.result.finding = Finding(
                self._tree.size, Damage.TRUNCATED,
                f"a signed checkpoint covers {covered} records but the log ends at "
                f"{self._tree.size}",
            )  # fmt: skip
        last_signed = max(self._signed_sizes, default=0)
        self.result.unsigned_tail = max(0, self._tree.size - max(last_signed, self._start_size))
        return self.result


def _check_row(row: StoredRow, expected: int, prev: bytes) -> Finding | None:
    if row.seq > expected:
        return Finding(expected, Damage.MISSING, f"records {expected}..{row.seq - 1} are gone")
    if row.seq < expected:
        return Finding(row.seq, Damage.INSERTED, "a record repeats an earlier sequence number")
    try:
        seq, _, _, stored_prev = parse_data(row.data)
    except (ValueError, KeyError, TypeError):
        return Finding(row.seq, Damage.MODIFIED, "the record's content is not intact")
    if leaf_hash(row.data) != row.leaf:
        return Finding(row.seq, Damage.MODIFIED, "the record's content does not match its hash")
    if seq != row.seq:
        return Finding(row.seq, Damage.REORDERED, f"the record at seq {row.seq} belongs at {seq}")
    if stored_prev != prev:
        return Finding(
            row.seq, Damage.INSERTED, "the record does not chain to the record before it"
        )
    return None
