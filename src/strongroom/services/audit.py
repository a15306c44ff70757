"""The audit trail as services use it: record, sample, checkpoint, verify, export.

Rules:
1. ``record`` returns only after the record is committed: callers await it
   before their response leaves (fail closed: if the audit log cannot take the
   record, the request fails with 503).
2. The request's origin (client IP, request id) comes from the request context,
   so services name only the actor, action, resource and details.
3. Rate-limit violations are sampled: at most one record per subject per
   window, carrying how many violations it stands for.
4. Checkpoints are signed with the install's Ed25519 audit key.
"""

from __future__ import annotations

import contextvars
import getpass
import hashlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from strongroom.crypto.signing import Signer, verify
from strongroom.domain import merkle
from strongroom.domain.audit import AuditEntry, AuditRecord, LogVerifier, Outcome, Verification
from strongroom.domain.checkpoints import (
    Checkpoint,
    SignedCheckpoint,
    key_id,
    verifier_key,
)
from strongroom.ports import AuditLog, AuditQuery, Clock

KEY_NAME: Final = "strongroom-audit"
RATE_LIMIT_SAMPLE_SECONDS: Final = 60.0
VERIFY_PAGE: Final = 5000


@dataclass(frozen=True, slots=True)
class Origin:
    ip: str | None = None
    request_id: str | None = None


_NO_ORIGIN: Final = Origin()
current_origin: contextvars.ContextVar[Origin] = contextvars.ContextVar(
    "strongroom_origin",
    default=_NO_ORIGIN,
)


def cli_actor() -> str:
    """The actor name of an operator at the command line."""
    try:
        return f"cli:{getpass.getuser()}"[:64]
    except (KeyError, OSError):
        return "cli"


class AuditTrail:
    def __init__(self, log: AuditLog, signer: Signer, clock: Clock) -> None:
        self._log = log
        self._signer = signer
        self._clock = clock
        self._key_id = key_id(KEY_NAME, signer.public_key)
        self.origin_name = "strongroom/" + hashlib.sha256(signer.public_key).hexdigest()[:16]
        self._samples: dict[tuple[str, str], tuple[float, int]] = {}

    @property
    def verifier_key(self) -> str:
        """The signed-note verifier key an auditor pins to check checkpoints."""
        return verifier_key(KEY_NAME, self._signer.public_key)

    @property
    def public_key(self) -> bytes:
        return self._signer.public_key

    async def record(
        self,
        action: str,
        *,
        actor: str,
        tenant: str | None = None,
        outcome: Outcome = "success",
        resource: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> AuditRecord:
        origin = current_origin.get()
        entry = AuditEntry(
            action=action, actor=actor, outcome=outcome, tenant=tenant, ip=origin.ip,
            request_id=origin.request_id, resource=resource, details=details or {},
        )  # fmt: skip
        (record,) = await self._log.append([entry])
        return record

    async def rate_limited(self, kind: str, subject: str, *, tenant: str | None) -> None:
        """Record a rate-limit violation, sampled per subject and window."""
        now = self._clock.now()
        last, pending = self._samples.get((kind, subject), (0.0, 0))
        pending += 1
        if now - last < RATE_LIMIT_SAMPLE_SECONDS:
            self._samples[(kind, subject)] = (last, pending)
            return
        self._samples[(kind, subject)] = (now, 0)
        if len(self._samples) > 10_000:
            # Old subjects are forgotten first; at worst one more record for them.
            for stale in sorted(self._samples, key=lambda k: self._samples[k][0])[:5_000]:
                del self._samples[stale]
        await self.record(
            "ratelimit.exceeded", actor=subject, tenant=tenant, outcome="failure",
            details={"limit": kind, "violations": pending},
        )  # fmt: skip

    def _sign(self, checkpoint: Checkpoint) -> SignedCheckpoint:
        signature = self._signer.sign(checkpoint.body().encode())
        return SignedCheckpoint(checkpoint, KEY_NAME, self._key_id, signature)

    async def checkpoint(self) -> SignedCheckpoint | None:
        """Sign the current tree if it grew since the last checkpoint."""
        return await self._log.checkpoint(self._sign, self.origin_name, self._clock.now())

    async def latest_checkpoint(self) -> SignedCheckpoint | None:
        checkpoints = await self._log.checkpoints()
        return checkpoints[-1] if checkpoints else None

    def check_signature(self, signed: SignedCheckpoint) -> bool:
        return (
            signed.key_name == KEY_NAME
            and signed.key_id == self._key_id
            and signed.checkpoint.origin == self.origin_name
            and verify(self._signer.public_key, signed.checkpoint.body().encode(), signed.signature)
        )

    async def verify(self, trusted: SignedCheckpoint | None = None) -> Verification:
        """Recompute the whole stored log against every checkpoint (and a trusted one)."""
        checkpoints = await self._log.checkpoints()
        if trusted is not None:
            checkpoints.append(trusted)
        horizon = await self._log.horizon()
        start = merkle.CompactRange.from_state(horizon.size, horizon.edge) if horizon.size else None
        verifier = LogVerifier(
            checkpoints, self.check_signature, start=start, start_prev=horizon.prev_leaf
        )
        after = horizon.size - 1 if horizon.size else None
        while verifier.result.finding is None:
            rows = await self._log.scan(after, VERIFY_PAGE)
            for row in rows:
                if not verifier.feed(row):
                    break
            if len(rows) < VERIFY_PAGE:
                break
            after = rows[-1].seq
        return verifier.finish()

    async def query(self, query: AuditQuery) -> list[AuditRecord]:
        return await self._log.query(query)

    async def export(self, query: AuditQuery) -> AsyncIterator[dict[str, Any]]:
        """Records with inclusion proofs against the newest checkpoint, as dictionaries."""
        latest = await self.latest_checkpoint()
        size = latest.checkpoint.tree_size if latest else 0
        after = query.after
        while True:
            page = await self._log.query(
                AuditQuery(
                    tenant=query.tenant, actor=query.actor, action=query.action,
                    since=query.since, until=query.until, after=after, limit=500,
                )
            )  # fmt: skip
            for record in page:
                item: dict[str, Any] = {
                    **record.view(),
                    "data": record.data.decode(),
                }
                if record.seq < size:
                    proof = await self._log.inclusion_proof(record.seq, size)
                    item["proof"] = {
                        "tree_size": size,
                        "audit_path": [node.hex() for node in proof],
                    }
                yield item
            if len(page) < 500:
                return
            after = page[-1].seq
