"""Ports: the abstract interfaces that services are written against.

Adapters (``strongroom.adapters``) implement them; the app factory chooses one
by configuration. Each abstract method's docstring states the guarantee every
adapter must keep; the contract suite in ``tests/contract`` checks it.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from strongroom.domain.audit import AuditEntry, AuditRecord, StoredRow
from strongroom.domain.checkpoints import Checkpoint, SignedCheckpoint
from strongroom.domain.risk import AppliedPolicy, DecisionRecord, Policy
from strongroom.domain.tenancy import ApiKeyRecord, Tenant, TenantStatus


class NewRecord(NamedTuple):
    """A record to append: ``record_id`` is the idempotency key within (tenant, topic).

    A named tuple rather than a frozen dataclass: ingest builds one per event,
    and a tuple is built in a third of the time.
    """

    tenant: str
    record_id: str
    key: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A committed record at its offset in a topic."""

    topic: str
    offset: int
    tenant: str
    record_id: str
    key: str
    appended_at: float
    payload: bytes


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Which record ids were newly committed and which were already in the topic."""

    accepted: tuple[str, ...]
    duplicates: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Delivery:
    """A record handed to a consumer group member, with how often it was delivered."""

    record: StoredRecord
    deliveries: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record a consumer group gave up on after too many deliveries."""

    dead_letter_offset: int
    topic: str
    group: str
    offset: int
    deliveries: int
    dead_at: float
    replayed: bool


@dataclass(frozen=True, slots=True)
class GroupState:
    """Where a consumer group stands on a topic, for metrics."""

    topic: str
    tenant: str
    group: str
    #: Records of the tenant after the group's position, not delivered yet.
    lag: int
    #: Delivered and not acknowledged yet.
    pending: int
    #: The group's dead letters not replayed yet.
    dead_letters: int


class Clock(ABC):
    """A source of time, passed in so tests can control it instead of patching."""

    @abstractmethod
    def now(self) -> float:
        """Seconds since the epoch."""


class SystemClock(Clock):
    def now(self) -> float:
        return time.time()


class EventLog(ABC):
    """An ordered, durable, idempotent log of records, partitioned by topic.

    Records are scoped by tenant: every read names the tenant, and a tenant
    never sees another tenant's records, not even their offsets' payloads.
    """

    @abstractmethod
    async def append(self, topic: str, records: Sequence[NewRecord]) -> AppendResult:
        """Append records atomically and durably.

        Guarantees: when this returns, every accepted record is committed and
        survives a crash of the process; offsets are strictly increasing per
        topic in the order given; a record whose (tenant, topic, record_id) is
        already stored, or repeated earlier in ``records``, is not stored again
        and is reported in ``duplicates``. Either all new records are committed
        or none is (a failure never leaves a record half-recorded).

        Raises:
            Backpressure: the writer is past its queue bound; nothing was written.
            StorageUnavailable: the write failed; nothing was committed.
        """

    @abstractmethod
    async def append_together(
        self, batches: Sequence[tuple[str, Sequence[NewRecord]]]
    ) -> list[AppendResult]:
        """Append to several topics in one atomic, durable commit.

        Same guarantees as ``append`` for each (topic, records) pair, and all or
        nothing across them: a crash never leaves one topic written without the
        others.
        """

    @abstractmethod
    async def read(
        self, topic: str, *, tenant: str, after: int | None, limit: int
    ) -> list[StoredRecord]:
        """Committed records of ``tenant`` with offset greater than ``after``, in offset order.

        Raises:
            StorageUnavailable: the log cannot be read.
        """

    @abstractmethod
    async def group_read(
        self,
        topic: str,
        group: str,
        *,
        tenant: str,
        consumer: str,
        limit: int,
        visibility_timeout: float,
        max_deliveries: int,
    ) -> list[Delivery]:
        """Deliver up to ``limit`` records to a member of a consumer group (at least once).

        Guarantees: first redelivers records whose visibility timeout expired
        without an ack, then new records in offset order. A record delivered
        ``max_deliveries`` times without an ack is moved to the dead-letter
        topic ``<topic>.dlq`` instead of being delivered again. A new group
        starts at the earliest record.
        """

    @abstractmethod
    async def group_ack(
        self, topic: str, group: str, *, tenant: str, offsets: Sequence[int]
    ) -> int:
        """Acknowledge delivered records; returns how many pending deliveries were settled."""

    @abstractmethod
    async def dead_letters(
        self, topic: str, *, tenant: str, group: str | None, limit: int
    ) -> list[DeadLetter]:
        """Dead letters of ``topic`` for ``tenant`` (optionally one group), oldest first."""

    @abstractmethod
    async def replay_dead_letters(
        self, topic: str, *, tenant: str, group: str, dead_letter_offsets: Sequence[int] | None
    ) -> int:
        """Make dead letters deliverable to their group again; returns how many were replayed.

        ``None`` replays every dead letter of the group not yet replayed.
        """

    @abstractmethod
    async def offset_at(self, topic: str, *, tenant: str, at: float) -> int | None:
        """Offset of ``tenant``'s first record appended at or after ``at`` (epoch seconds);
        None when there is none."""

    @abstractmethod
    async def rewind_group(self, topic: str, group: str, *, tenant: str, offset: int) -> None:
        """Move ``group`` (created if new) so that its next reads deliver ``tenant``'s records
        from ``offset`` on, in order, as new deliveries; its pending deliveries are dropped.
        Records already acknowledged are delivered again: this is incident recovery."""

    @abstractmethod
    async def group_states(self) -> list[GroupState]:
        """Every consumer group of every topic and tenant: lag, pending and dead letters."""

    @abstractmethod
    async def trim(self, topic: str, *, max_records: int) -> int:
        """Delete each tenant's oldest records of ``topic`` beyond its newest ``max_records``,
        but never a record that a consumer group of that tenant on ``topic`` has not
        settled: not delivered yet, pending, or dead-lettered and not replayed. Records go
        oldest first, so trimming stops at the first one a group still needs. Returns how
        many were deleted.

        An engine that cannot delete single records (Kafka, where retention is the
        broker's) deletes nothing and returns 0; it never breaks the guarantee."""

    @abstractmethod
    async def erase_tenant(self, tenant: str) -> int:
        """Delete every record, group and pending delivery of ``tenant``; returns records deleted.

        Offsets of other tenants' records do not change; the erased offsets become gaps.
        """

    @abstractmethod
    async def length(self, topic: str) -> int:
        """Number of records in a topic (all tenants), for metrics."""

    @abstractmethod
    async def check_writable(self) -> None:
        """Return when a write would be accepted now.

        Raises:
            StorageUnavailable: the log cannot take writes.
        """

    @abstractmethod
    async def aclose(self) -> None:
        """Flush queued writes, then release every resource. Idempotent."""


@dataclass(frozen=True, slots=True)
class RateDecision:
    """The outcome of a rate-limit check, with what the response headers report."""

    allowed: bool
    limit: int
    remaining: int
    reset_at: float


class RateLimiter(ABC):
    """Counts requests per bucket against ``burst`` requests per ``burst / rate`` seconds."""

    @abstractmethod
    async def hit(self, bucket: str, *, rate: float, burst: int) -> RateDecision:
        """Consume one request from ``bucket``; ``allowed`` is False when it is exhausted."""

    @abstractmethod
    async def peek(self, bucket: str, *, rate: float, burst: int) -> RateDecision:
        """Report the bucket's state without consuming from it."""

    @abstractmethod
    async def consume(self, bucket: str, *, rate: float, burst: int) -> bool:
        """Consume one request from ``bucket``; False when it is exhausted (no state report)."""


@dataclass(frozen=True, slots=True)
class UsageRow:
    tenant_id: str
    day: str
    operation: str
    count: int
    bytes: int


class TenantRepository(ABC):
    """Tenants. Names are unique; ids never change."""

    @abstractmethod
    async def create(self, tenant: Tenant) -> None:
        """Store a new tenant.

        Raises:
            Conflict: a tenant with that name exists.
            StorageUnavailable: the store failed.
        """

    @abstractmethod
    async def get(self, tenant_id: str) -> Tenant | None:
        """The tenant with this id, or None."""

    @abstractmethod
    async def find(self, id_or_name: str) -> Tenant | None:
        """The tenant with this id or, failing that, this name."""

    @abstractmethod
    async def list(self, *, after: str | None, limit: int) -> list[Tenant]:
        """Tenants ordered by id, with id greater than ``after``."""

    @abstractmethod
    async def set_status(self, tenant_id: str, status: TenantStatus, now: float) -> Tenant | None:
        """Change a tenant's status; None if there is no such tenant."""

    @abstractmethod
    async def erase(self, tenant_id: str, now: float) -> None:
        """Delete the tenant's keys and usage and keep a tombstone (status erased, name cleared)."""


class ApiKeyRepository(ABC):
    """Managed API keys, stored with their keyed hash only."""

    @abstractmethod
    async def create(self, record: ApiKeyRecord) -> None:
        """Store a new key record."""

    @abstractmethod
    async def get(self, key_id: str) -> ApiKeyRecord | None:
        """The key with this id, in any tenant, or None."""

    @abstractmethod
    async def any_exist(self) -> bool:
        """True when at least one managed key exists, in any tenant and any state."""

    @abstractmethod
    async def list(self, tenant_id: str, *, after: str | None, limit: int) -> list[ApiKeyRecord]:
        """The tenant's keys ordered by id, with id greater than ``after``."""

    @abstractmethod
    async def rotate(self, old_id: str, new: ApiKeyRecord, old_expires_at: float) -> bool:
        """Atomically store ``new`` and let ``old_id`` expire at ``old_expires_at`` at the latest.

        Returns False (storing nothing) when the old key is missing or revoked.
        """

    @abstractmethod
    async def revoke(self, key_id: str, now: float) -> bool:
        """Revoke a key; False when it does not exist or was already revoked."""

    @abstractmethod
    async def touch(self, last_used: dict[str, float]) -> None:
        """Record last-use times in one write (called periodically, not per request)."""


class UsageRepository(ABC):
    """Per-tenant, per-day, per-operation counters."""

    @abstractmethod
    async def add(self, rows: Sequence[UsageRow]) -> None:
        """Add counts and bytes to the stored totals, atomically (no lost updates)."""

    @abstractmethod
    async def query(self, tenant_id: str, first_day: str, last_day: str) -> list[UsageRow]:
        """Totals of a tenant between two days (inclusive, ``YYYY-MM-DD``)."""


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Filters for reading the audit log; ``tenant`` None means every tenant."""

    tenant: str | None = None
    actor: str | None = None
    action: str | None = None
    since: float | None = None
    until: float | None = None
    after: int | None = None
    limit: int = 100


@dataclass(frozen=True, slots=True)
class PruneHorizon:
    """Where the stored log begins after pruning: the tree's size and right edge there,
    and the last pruned leaf hash (what the first stored record chains to)."""

    size: int
    prev_leaf: bytes
    edge: tuple[bytes, ...] = ()


class AuditLog(ABC):
    """The append-only, tamper-evident audit log (an RFC 9162 Merkle tree of records)."""

    @abstractmethod
    async def append(self, entries: Sequence[AuditEntry]) -> list[AuditRecord]:
        """Append entries in order, durably, and publish them to ``payments.audit``.

        Guarantees: when this returns, the records are committed with
        consecutive sequence numbers, each chained to the one before.

        Raises:
            StorageUnavailable: nothing was appended.
        """

    @abstractmethod
    async def query(self, query: AuditQuery) -> list[AuditRecord]:
        """Records matching the filters, in sequence order."""

    @abstractmethod
    async def scan(self, after: int | None, limit: int) -> list[StoredRow]:
        """Stored rows as they are (unverified), in sequence order, for verification."""

    @abstractmethod
    async def size(self) -> int:
        """Number of records ever appended (pruned ones included)."""

    @abstractmethod
    async def root(self, tree_size: int) -> bytes:
        """The Merkle root of the first ``tree_size`` records."""

    @abstractmethod
    async def leaf(self, seq: int) -> bytes:
        """The leaf hash of record ``seq``. Raises NotFound when there is none."""

    @abstractmethod
    async def inclusion_proof(self, seq: int, tree_size: int) -> list[bytes]:
        """RFC 9162 inclusion proof of record ``seq`` in the tree of ``tree_size``."""

    @abstractmethod
    async def consistency_proof(self, first: int, second: int) -> list[bytes]:
        """RFC 9162 consistency proof between tree sizes ``first`` and ``second``."""

    @abstractmethod
    async def checkpoint(
        self, sign: Callable[[Checkpoint], SignedCheckpoint], origin: str, now: float
    ) -> SignedCheckpoint | None:
        """Sign and store a checkpoint of the current tree; None when nothing new was appended."""

    @abstractmethod
    async def checkpoints(self) -> list[SignedCheckpoint]:
        """Every stored checkpoint, smallest tree first."""

    @abstractmethod
    async def horizon(self) -> PruneHorizon:
        """Where the stored records begin."""

    @abstractmethod
    async def prune(self, before: int) -> int:
        """Delete records with seq below ``before`` (at most the newest checkpoint's size).

        Raises:
            Conflict: ``before`` is beyond the newest checkpoint or behind the horizon.
        """


# -- key management -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A data key encrypted by the key-encryption key (KEK) at ``kek_version``."""

    ciphertext: str
    kek_version: int


@dataclass(frozen=True, slots=True)
class KekStatus:
    """What the key manager holds: every KEK version and the oldest one still usable."""

    backend: str
    latest_version: int
    min_decryption_version: int
    versions: tuple[int, ...]


class KeyManager(ABC):
    """Wraps and unwraps data keys with a versioned key-encryption key (KEK).

    The KEK never leaves the key manager (OpenBao) or this process's memory
    (the local keyring); callers only see wrapped data keys.
    """

    @abstractmethod
    async def generate_data_key(self) -> tuple[bytes, WrappedKey]:
        """A fresh 32-byte data key and its wrapping under the latest KEK version.

        Raises:
            KeyManagerUnavailable: nothing was generated.
        """

    @abstractmethod
    async def unwrap(self, wrapped: str) -> bytes:
        """The data key inside ``wrapped``.

        Raises:
            KeyManagerUnavailable: the key manager cannot be reached.
            DataUnreadable: the wrapping is unknown, altered, or below the minimum
                decryption version.
        """

    @abstractmethod
    async def rewrap(self, wrapped: str) -> WrappedKey:
        """``wrapped`` re-encrypted under the latest KEK version (the data key is unchanged)."""

    @abstractmethod
    async def rotate(self) -> int:
        """Create a new KEK version, used for every wrap from now on; returns it."""

    @abstractmethod
    async def status(self) -> KekStatus:
        """Versions held and the minimum decryption version."""

    @abstractmethod
    async def set_min_decryption_version(self, version: int) -> None:
        """Refuse to unwrap anything wrapped under a KEK version below ``version``.

        Raises:
            Conflict: ``version`` is above the latest version.
        """

    def credential_expires_in(self) -> float | None:
        """Seconds until the credential this key manager uses expires; None when it never
        does (the local keyring) or the key manager cannot tell."""
        return None

    async def aclose(self) -> None:  # noqa: B027 - most key managers hold nothing to close
        """Release connections."""


class DataKeyState:
    ACTIVE = "active"
    RETIRED = "retired"


@dataclass(frozen=True, slots=True)
class DataKeyRecord:
    """A tenant's data key as stored: only ever wrapped."""

    dek_id: str
    tenant: str
    wrapped: str
    kek_version: int
    created_at: float
    state: str
    reserved: int
    max_seals: int


class DataKeyRepository(ABC):
    """Tenants' wrapped data keys and their seal counts."""

    @abstractmethod
    async def create(self, record: DataKeyRecord) -> None:
        """Store a new active key and retire the tenant's previous active one, atomically."""

    @abstractmethod
    async def active(self, tenant: str) -> DataKeyRecord | None:
        """The tenant's active key, or None."""

    @abstractmethod
    async def get(self, dek_id: str) -> DataKeyRecord | None:
        """The key with this id, in any state, or None (also after crypto-shredding)."""

    @abstractmethod
    async def reserve(self, dek_id: str, count: int) -> int | None:
        """Durably reserve ``count`` seals; returns the new reserved total.

        Returns None, reserving nothing, when the key is not active or the
        reservation would pass its ``max_seals``. Concurrent callers never
        receive overlapping reservations (no lost updates).
        """

    @abstractmethod
    async def rewrapped(self, dek_id: str, old: str, new: WrappedKey) -> bool:
        """Replace the wrapping if it is still ``old``; False when someone changed it first."""

    @abstractmethod
    async def behind(self, version: int, *, after: str | None, limit: int) -> list[DataKeyRecord]:
        """Keys wrapped under a KEK version below ``version``, ordered by id after ``after``."""

    @abstractmethod
    async def of_tenant(self, tenant: str) -> list[DataKeyRecord]:
        """Every key of the tenant, oldest first."""

    @abstractmethod
    async def tenants(self) -> list[str]:
        """Tenants that hold at least one key."""

    @abstractmethod
    async def count_by_version(self) -> dict[int, int]:
        """How many data keys are wrapped under each KEK version."""

    @abstractmethod
    async def delete(self, dek_id: str) -> None:
        """Forget a retired key nothing refers to any more."""

    @abstractmethod
    async def destroy_tenant(self, tenant: str) -> int:
        """Delete every key of the tenant (crypto-shredding); returns how many."""


@dataclass(frozen=True, slots=True)
class CardToken:
    """A vaulted card: the number only sealed, with what may be shown beside it."""

    token: str
    tenant: str
    fingerprint: bytes
    sealed_number: str
    last4: str
    bin6: str
    brand: str
    exp_month: int
    exp_year: int
    created_at: float


class TokenRepository(ABC):
    """The token vault's rows."""

    @abstractmethod
    async def by_fingerprint(self, tenant: str, fingerprint: bytes) -> CardToken | None:
        """The tenant's token for a card fingerprint, or None."""

    @abstractmethod
    async def get(self, tenant: str, token: str) -> CardToken | None:
        """The tenant's token, or None (also when it belongs to another tenant)."""

    @abstractmethod
    async def insert(self, card: CardToken) -> CardToken:
        """Store a new token; when the tenant already has one for the fingerprint
        (a concurrent request won), store nothing and return that one."""

    @abstractmethod
    async def update_expiry(self, tenant: str, token: str, exp_month: int, exp_year: int) -> None:
        """Record a newer expiry date for the same card."""

    @abstractmethod
    async def delete(self, tenant: str, token: str) -> bool:
        """Purge a token; False when the tenant has no such token."""

    @abstractmethod
    async def sealed_with(self, dek_id: str, *, after: str | None, limit: int) -> list[CardToken]:
        """Tokens whose number is sealed under ``dek_id``, ordered by token after ``after``."""

    @abstractmethod
    async def reseal(self, tenant: str, token: str, old: str, new: str) -> bool:
        """Replace a sealed number if it is still ``old``."""

    @abstractmethod
    async def erase_tenant(self, tenant: str) -> int:
        """Delete every token of the tenant; returns how many."""


@dataclass(frozen=True, slots=True)
class SealedSecret:
    """A tenant secret (a transaction-signing key, say), stored only sealed."""

    tenant: str
    name: str
    sealed: str
    created_at: float


class TenantSecretRepository(ABC):
    """Tenants' sealed secrets, one per (tenant, name)."""

    @abstractmethod
    async def put(self, secret: SealedSecret) -> None:
        """Store or replace the secret."""

    @abstractmethod
    async def get(self, tenant: str, name: str) -> SealedSecret | None:
        """The secret, or None."""

    @abstractmethod
    async def sealed_with(self, dek_id: str) -> list[SealedSecret]:
        """Secrets sealed under ``dek_id``."""

    @abstractmethod
    async def reseal(self, tenant: str, name: str, old: str, new: str) -> bool:
        """Replace a sealed value if it is still ``old``."""

    @abstractmethod
    async def erase_tenant(self, tenant: str) -> int:
        """Delete every secret of the tenant."""


class TenantSettingsRepository(ABC):
    """Per-tenant product settings, stored as one JSON document per tenant."""

    @abstractmethod
    async def get(self, tenant: str) -> dict[str, object]:
        """The tenant's stored settings ({} when none were set)."""

    @abstractmethod
    async def put(self, tenant: str, settings: dict[str, object], now: float) -> None:
        """Store the whole document."""

    @abstractmethod
    async def erase_tenant(self, tenant: str) -> None:
        """Forget the tenant's settings."""


class PolicyStore(ABC):
    """Each tenant's policy versions, and which one is active."""

    @abstractmethod
    async def get_active(self, tenant: str) -> Policy:
        """The tenant's active policy; ``DEFAULT_POLICY`` until one is applied."""

    @abstractmethod
    async def apply(self, tenant: str, text: str, actor: str, now: float) -> AppliedPolicy:
        """Validate ``text``, keep it as a version and make it active.

        Applying the content of a stored version again keeps one version and
        makes it active. When this returns, the change is committed.

        Raises:
            PolicyInvalid: the text is not a valid policy; nothing changed.
            StorageUnavailable: the store failed; nothing changed.
        """

    @abstractmethod
    async def get(self, tenant: str, version: str) -> Policy | None:
        """A version the tenant applied, or the default policy by its version."""

    @abstractmethod
    async def history(self, tenant: str) -> list[AppliedPolicy]:
        """The tenant's applications, oldest first."""


class DecisionStore(ABC):
    """Stored decisions, found by trace id or by what makes a request a replay."""

    @abstractmethod
    async def put(self, record: DecisionRecord) -> DecisionRecord:
        """Store ``record`` unless the tenant has one with its transaction id or
        its idempotency key; return the stored one (the first wins).

        Raises:
            StorageUnavailable: the store failed; nothing was stored.
        """

    @abstractmethod
    async def get(self, tenant: str, trace_id: str) -> DecisionRecord | None:
        """The tenant's decision with this trace id (None for another tenant's)."""

    @abstractmethod
    async def find(
        self, tenant: str, *, transaction_id: str, idempotency_key: str | None
    ) -> DecisionRecord | None:
        """The decision stored for this idempotency key, else for this transaction id."""
