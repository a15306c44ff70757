"""Risk evaluation as a use case: gather the facts, decide, explain, keep, replay.

Rules this service guarantees:

1. A transaction counts once: velocity and the seen-card register are keyed
   by its ``transaction_id``, so a retry, a replay or two gateways racing on
   it never count it twice.
2. Replays answer with the first decision. A request whose Idempotency-Key or
   transaction id was already evaluated in the tenant gets the stored record
   back, gathers nothing and counts nothing; with different inputs it is
   refused (``DecisionConflict``, 422). A replay publishes its decision again
   (idempotent by trace id), so a publish that failed the first time is not lost.
   Requests for the same key or transaction id that arrive while the first is
   still being decided wait for its decision and replay it.
3. Stored inputs are tokenized or hashed: the card is its token, last four,
   brand and BIN; the IP is a keyed hash; there is never a card number.
4. Counters are per tenant: a velocity key is ``tenant:subject:digest`` (and
   the currency, for amount velocity), the digest being the first 32 hex
   digits of the SHA-256 of the subject's value.
5. ``replay`` re-evaluates the stored facts with the stored policy version;
   it reproduces the decision only if every field is equal.
6. ``shadow`` records nothing in the live counters.
7. Every evaluation keeps its card, merchant, device and IP events (counts,
   and amounts in its currency) for ``history_seconds`` even when the active
   policy does not count them, so a candidate policy tried in shadow mode
   finds the history its velocity factors need, for windows up to that long.
8. An evaluation is answered only once its decision is durable: stored and
   appended to ``risk.decisions``. When the decision store can write the
   stream record in the decision's own transaction (``publishes_to``), it
   does, and many concurrent decisions share one commit; otherwise the
   decision is committed first and appended to the log after.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Final

import orjson
from pydantic import ValidationError

from strongroom.domain.risk import (
    TRANSACTION,
    AppliedPolicy,
    DecisionRecord,
    Facts,
    Policy,
    evaluate,
)
from strongroom.domain.risk.policy import VelocityAmount
from strongroom.domain.topics import RISK_DECISIONS
from strongroom.errors import FieldError, InvalidRequest, NotFound
from strongroom.ports import DecisionStore, EventLog, NewRecord, PolicyStore
from strongroom.services.audit import AuditTrail
from strongroom.services.processor_health import ProcessorHealthMonitor
from strongroom.services.risk_models import (
    TRACE_PREFIX,
    CardRef,
    CardResolver,
    DecisionConflict,
    Evaluation,
    KnownCards,
    PolicyRejected,
    ReplayResult,
    RiskRequest,
    ShadowDiff,
    digest,
    fingerprint,
    new_trace_id,
    timestamp,
    validated,
)
from strongroom.services.risk_stores import (
    DEFAULT_MAX_DECISIONS,
    DecisionJournal,
    MemoryDecisionStore,
    MemoryPolicyStore,
)
from strongroom.services.velocity import (
    MemorySeenCards,
    MemoryVelocityCounter,
    SeenCards,
    VelocityCounter,
    VelocityQuery,
    VelocityTotals,
)

__all__ = [
    "DECISIONS_TOPIC",
    "DEFAULT_HISTORY_SECONDS",
    "DEFAULT_MAX_DECISIONS",
    "MAX_SHADOW_SAMPLES",
    "TRACE_PREFIX",
    "CardRef",
    "CardResolver",
    "DecisionConflict",
    "DecisionStore",
    "Evaluation",
    "KnownCards",
    "MemoryDecisionStore",
    "MemoryPolicyStore",
    "PolicyRejected",
    "PolicyStore",
    "ReplayResult",
    "RiskRequest",
    "RiskService",
    "ShadowDiff",
    "new_trace_id",
]

DECISIONS_TOPIC: Final = RISK_DECISIONS
MAX_SHADOW_SAMPLES: Final = 10_000
#: How long every subject's events are kept for shadow runs, used or not (rule 7).
DEFAULT_HISTORY_SECONDS: Final = 24 * 3600

#: (tenant, "key" or "transaction", value): what makes two requests one evaluation.
_Claim = tuple[str, str, str]
#: A policy's velocity factors: (name, subject, window seconds, sums amounts).
_Plan = tuple[tuple[str, str, int, bool], ...]
#: Policy versions whose velocity plans are kept; past this the cache starts over.
MAX_CACHED_PLANS: Final = 1000
#: What velocity is counted for: every subject's events are kept (rule 7).
SUBJECTS: Final = ("card", "merchant", "device", "ip")
#: IP address hashes kept; past this the memory starts over.
MAX_REMEMBERED_IPS: Final = 10_000


class RiskService:
    """Evaluate transactions, keep and replay decisions, apply and shadow policies."""

    def __init__(
        self,
        *,
        policies: PolicyStore,
        decisions: DecisionStore,
        velocity: VelocityCounter,
        seen_cards: SeenCards,
        hash_ip: Callable[[str], str],
        health: ProcessorHealthMonitor | None = None,
        log: EventLog | None = None,
        audit: AuditTrail | None = None,
        history_seconds: int = DEFAULT_HISTORY_SECONDS,
    ) -> None:
        if history_seconds < 0:
            raise ValueError("history_seconds must not be negative")
        self.policies = policies
        self.decisions = decisions
        self._velocity = velocity
        self._seen = seen_cards
        self._hash_ip = hash_ip
        self._health = health
        self._log = log
        self._audit = audit
        self._history_seconds = history_seconds
        # Rule 8: one commit for the decision and its stream record when the store can.
        self._journal = (
            decisions
            if isinstance(decisions, DecisionJournal) and decisions.publishes_to(log)
            else None
        )
        self._deciding: dict[_Claim, asyncio.Future[DecisionRecord | None]] = {}
        self._plans: dict[str, _Plan] = {}
        self._ip_hashes: dict[str, str] = {}
        #: Token descriptions for the evaluate route (``KnownCards``).
        self.known_cards = KnownCards()

    async def evaluate(self, tenant: str, request: RiskRequest, now: float) -> Evaluation:
        """Decide on ``request`` under the tenant's active policy, or replay (rule 2).

        Raises:
            DecisionConflict: the idempotency key or transaction id was used
                with other inputs.
            StorageUnavailable, Backpressure: a store, the counters or the
                stream cannot take the write; a retry is safe.
        """
        ip_hash = self._ip_hash(request.ip) if request.ip else None
        inputs = fingerprint(request, ip_hash)
        existing = await self.decisions.find(
            tenant, transaction_id=request.transaction_id, idempotency_key=request.idempotency_key
        )
        if existing is not None:
            return await self._replayed(existing, inputs)
        claims = [(tenant, "transaction", request.transaction_id)]
        if request.idempotency_key is not None:
            claims.append((tenant, "key", request.idempotency_key))
        for claim in claims:
            pending = self._deciding.get(claim)
            if pending is not None:
                # Shielded: this caller going away must not cancel the others' wait.
                decided = await asyncio.shield(pending)
                if decided is not None:
                    return await self._replayed(decided, inputs)
                # The first evaluation failed; this one decides on its own.
                break
        decided_here: asyncio.Future[DecisionRecord | None] = (
            asyncio.get_running_loop().create_future()
        )
        for claim in claims:
            self._deciding[claim] = decided_here
        try:
            evaluation = await self._decide(tenant, request, ip_hash, inputs, now)
        except BaseException:
            decided_here.set_result(None)
            raise
        else:
            decided_here.set_result(evaluation.record)
        finally:
            for claim in claims:
                if self._deciding.get(claim) is decided_here:
                    del self._deciding[claim]
        return evaluation

    def _ip_hash(self, ip: str) -> str:
        """The keyed hash of ``ip``, remembered: the same addresses come back often, and
        an HMAC per evaluation costs more than the lookup."""
        hashed = self._ip_hashes.get(ip)
        if hashed is None:
            if len(self._ip_hashes) >= MAX_REMEMBERED_IPS:
                self._ip_hashes.clear()
            hashed = self._ip_hashes[ip] = self._hash_ip(ip)
        return hashed

    async def _decide(
        self, tenant: str, request: RiskRequest, ip_hash: str | None, inputs: str, now: float
    ) -> Evaluation:
        policy = await self.policies.get_active(tenant)
        (facts,) = await self._facts(
            tenant, request, ip_hash, [policy], now, self._velocity, self._seen, record=True
        )
        record = DecisionRecord(
            tenant=tenant,
            trace_id=new_trace_id(now),
            transaction_id=request.transaction_id,
            idempotency_key=request.idempotency_key,
            fingerprint=inputs,
            evaluated_at=timestamp(now),
            facts=facts,
            decision=evaluate(policy, facts),
            metadata=dict(request.metadata),
        )
        if self._journal is not None:
            stored = await self._journal.put_published(record, DECISIONS_TOPIC, _published(record))
        else:
            stored = await self.decisions.put(record)
        if stored.trace_id != record.trace_id:
            # Another evaluation of the same transaction was stored first.
            return await self._replayed(stored, inputs)
        if self._journal is None:
            await self._publish(stored)
        return Evaluation(stored, replayed=False)

    async def _replayed(self, record: DecisionRecord, inputs: str) -> Evaluation:
        if record.fingerprint != inputs:
            raise DecisionConflict(
                "This transaction was already evaluated with different inputs; "
                "send the same body, or a new transaction_id and Idempotency-Key.",
                (FieldError("transaction_id", "already evaluated with different inputs"),),
            )
        await self._publish(record)
        return Evaluation(record, replayed=True)

    async def _publish(self, record: DecisionRecord) -> None:
        if self._log is None:
            return
        await self._log.append(DECISIONS_TOPIC, [_published(record)])

    async def _facts(
        self,
        tenant: str,
        request: RiskRequest,
        ip_hash: str | None,
        policies: Sequence[Policy],
        now: float,
        velocity: VelocityCounter,
        seen: SeenCards,
        *,
        record: bool,
    ) -> list[Facts]:
        """The facts of ``request`` as each policy needs them (its velocity factors)."""
        card = request.card
        subjects = {
            "card": None if card is None else card.token,
            "merchant": request.merchant_id_hash,
            "device": request.device_id,
            "ip": ip_hash,
        }
        # Each subject's counter key (rule 4); amount keys add the currency.
        keys = {
            subject: None if value is None else f"{tenant}:{subject}:{digest(value)}"
            for subject, value in subjects.items()
        }
        retain = self._history_seconds if record else 0
        plans = [self._plan(policy) for policy in policies]
        queries = _queries(plans, keys, request.currency, retain)
        totals: list[tuple[VelocityTotals, ...]] = []
        if queries:
            count = velocity.observe_many if record else velocity.peek_many
            totals = await count(request.transaction_id, request.amount, now, queries)
        first_seen = False
        card_key = keys["card"]
        if card_key is not None:
            check = seen.first_seen if record else seen.peek
            first_seen = await check(card_key, request.transaction_id, now)
        band = None
        if self._health is not None and request.processor is not None:
            band = self._health.band(tenant, request.processor, now)
        found = {
            (query.key, window): total
            for query, per_window in zip(queries, totals, strict=True)
            for window, total in zip(query.windows, per_window, strict=True)
        }
        observed = [_observations(plan, keys, request.currency, found) for plan in plans]
        base = Facts(
            transaction_id=request.transaction_id,
            amount=request.amount,
            currency=request.currency,
            merchant_id_hash=request.merchant_id_hash,
            card_token=None if card is None else card.token,
            card_bin=None if card is None else card.bin,
            card_country=None if card is None else card.country,
            last4=None if card is None else card.last4,
            brand=None if card is None else card.brand,
            customer_ref_hash=request.customer_ref_hash,
            device_id=request.device_id,
            ip_hash=ip_hash,
            country=request.country,
            channel=request.channel,
            agent_id=request.agent_id,
            agent_verified=request.agent_verified,
            processor=request.processor,
            processor_band=band,
            first_seen_card=first_seen,
            velocity=observed[0],
        )
        return [base, *(replace(base, velocity=velocity) for velocity in observed[1:])]

    def _plan(self, policy: Policy) -> _Plan:
        """The policy's velocity factors as plain tuples, kept per version: reading
        them off the policy model on every evaluation costs more than the counting."""
        plan = self._plans.get(policy.version)
        if plan is None:
            if len(self._plans) >= MAX_CACHED_PLANS:
                self._plans.clear()
            plan = self._plans[policy.version] = tuple(
                (f.name, f.subject, f.window_seconds, isinstance(f, VelocityAmount))
                for f in policy.velocity_factors()
            )
        return plan

    async def decision(self, tenant: str, trace_id: str) -> DecisionRecord:
        """A stored decision with its inputs.

        Raises:
            NotFound: no such decision in this tenant.
        """
        record = await self.decisions.get(tenant, trace_id)
        if record is None:
            raise NotFound("No decision has this trace id.")
        return record

    async def replay(self, tenant: str, trace_id: str) -> ReplayResult:
        """Re-evaluate a stored decision's inputs with its policy version (rule 5).

        Raises:
            NotFound: no such decision, or its policy version is no longer stored.
        """
        record = await self.decision(tenant, trace_id)
        policy = await self.policies.get(tenant, record.decision.policy_version)
        if policy is None:
            raise NotFound("The policy version of this decision is no longer stored.")
        again = evaluate(policy, record.facts)
        return ReplayResult(trace_id, again == record.decision, record.decision, again)

    async def apply_policy(
        self, tenant: str, text: str, *, actor: str, now: float
    ) -> AppliedPolicy:
        """Validate, version and activate a policy, and audit the change.

        Raises:
            PolicyRejected: the text is not a valid policy; nothing changed.
            StorageUnavailable: the store or the audit log failed.
        """
        validated(text)
        previous = await self.policies.get_active(tenant)
        applied = await self.policies.apply(tenant, text, actor, now)
        if self._audit is not None:
            await self._audit.record(
                "risk.policy_applied",
                actor=actor,
                tenant=tenant,
                resource=f"policy:{applied.version}",
                details={
                    "version": applied.version,
                    "previous_version": previous.version,
                    "factors": [factor.name for factor in applied.policy.factors],
                },
            )
        return applied

    async def shadow(
        self,
        tenant: str,
        policy_text: str,
        transactions: Iterable[Mapping[str, Any]],
        now: float,
        *,
        isolated: bool = False,
        resolve_card: CardResolver | None = None,
    ) -> list[ShadowDiff]:
        """The sample transactions whose decision ``policy_text`` would change.

        Each sample is a request body. Velocity and first-seen cards come from
        the live counters, as if the sample were evaluated now, without
        recording it; with ``isolated`` they come from fresh counters that
        only the samples feed, in order, so the result depends on the file alone.

        Raises:
            PolicyRejected: the candidate is not a valid policy.
            InvalidRequest: a sample is not a valid request body, or carries a
                card number and no ``resolve_card`` was given.
        """
        candidate = validated(policy_text)
        active = await self.policies.get_active(tenant)
        velocity: VelocityCounter = self._velocity
        seen: SeenCards = self._seen
        if isolated:
            velocity, seen = MemoryVelocityCounter(), MemorySeenCards()
        diffs = []
        for line, sample in enumerate(transactions, start=1):
            if line > MAX_SHADOW_SAMPLES:
                raise InvalidRequest(f"A shadow run takes at most {MAX_SHADOW_SAMPLES} samples.")
            request = await _sample(line, sample, resolve_card)
            ip_hash = self._ip_hash(request.ip) if request.ip else None
            facts = await self._facts(
                tenant, request, ip_hash, [active, candidate], now, velocity, seen, record=isolated
            )
            before, after = evaluate(active, facts[0]), evaluate(candidate, facts[1])
            if before.decision != after.decision:
                diffs.append(ShadowDiff(line, request.transaction_id, before, after))
        return diffs


async def _sample(
    line: int, sample: Mapping[str, Any], resolve_card: CardResolver | None
) -> RiskRequest:
    try:
        body = TRANSACTION.validate_python(sample)
    except ValidationError as exc:
        errors = tuple(
            FieldError(
                f"line {line}: " + ".".join(str(part) for part in error["loc"]),
                error["msg"],
            )
            for error in exc.errors(include_url=False, include_input=False)
        )
        raise InvalidRequest(f"Sample transaction {line} is not a valid request.", errors) from None
    if body.card.token is not None:
        card = CardRef(token=body.card.token)
    elif resolve_card is not None:
        card = await resolve_card(body.card)
    else:
        raise InvalidRequest(
            f"Sample transaction {line} carries a card number; give card tokens in samples.",
            (FieldError(f"line {line}: card", "use a token"),),
        )
    return RiskRequest.from_body(body, replace(card, country=body.card.issuer_country))


def _published(record: DecisionRecord) -> NewRecord:
    """The decision's record on ``risk.decisions``: what ``GET /v1/decisions`` shows."""
    return NewRecord(
        tenant=record.tenant,
        record_id=record.trace_id,
        key=record.facts.merchant_id_hash,
        payload=orjson.dumps(record.public()),
    )


def _velocity_key(
    subject: str, amount: bool, keys: Mapping[str, str | None], currency: str
) -> str | None:
    key = keys[subject]
    if key is None or not amount:
        return key
    return f"{key}:{currency}"


def _queries(
    plans: Sequence[_Plan], keys: Mapping[str, str | None], currency: str, retain: int
) -> list[VelocityQuery]:
    """One query per key, with every window any of the policies asks of it.

    With ``retain``, every subject's count and amount keys are kept that long
    even when no policy counts them (rule 7).
    """
    queries = []
    for subject, amount, windows, sums in _query_shapes(tuple(plans), bool(retain)):
        key = _velocity_key(subject, amount, keys, currency)
        if key is not None:
            queries.append(VelocityQuery(key, windows, sums, retain))
    return queries


@functools.lru_cache(maxsize=MAX_CACHED_PLANS)
def _query_shapes(
    plans: tuple[_Plan, ...], retain: bool
) -> tuple[tuple[str, bool, tuple[int, ...], bool], ...]:
    """What ``_queries`` asks of each subject for these plans: (subject, amount key,
    windows, sums), worked out once per set of policies rather than per evaluation."""
    wanted: dict[tuple[str, bool], tuple[set[int], bool]] = {}
    if retain:
        for subject in SUBJECTS:
            wanted[(subject, False)] = (set(), False)
            wanted[(subject, True)] = (set(), False)
    for plan in plans:
        for _, subject, window, amount in plan:
            windows, sums = wanted.get((subject, amount), (set(), False))
            windows.add(window)
            wanted[(subject, amount)] = (windows, sums or amount)
    return tuple(
        (subject, amount, tuple(sorted(windows)), sums)
        for (subject, amount), (windows, sums) in wanted.items()
    )


def _observations(
    plan: _Plan,
    keys: Mapping[str, str | None],
    currency: str,
    found: Mapping[tuple[str, int], VelocityTotals],
) -> dict[str, int]:
    observed: dict[str, int] = {}
    for name, subject, window, amount in plan:
        key = _velocity_key(subject, amount, keys, currency)
        if key is None:
            continue
        totals = found[(key, window)]
        observed[name] = (totals.amount or 0) if amount else totals.count
    return observed
