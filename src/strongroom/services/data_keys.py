"""Per-tenant data keys: sealing and opening fields without calling the KMS per record.

Rules this service guarantees:

1. Every tenant seals with its own data key (DEK); the DEK is stored only
   wrapped by the key manager's KEK.
2. Seals are counted durably before they happen: a DEK reserves seals in
   leases (``LEASE``) and is replaced by a fresh one before its ``max_seals``
   (at most 2^31, far below GCM's 2^32 random-nonce bound). A crash loses at
   most the unused rest of a lease, never an uncounted seal.
3. Unwrapped DEKs are cached with a size bound and a TTL. While the KMS is down,
   cached DEKs keep working until their TTL; anything else raises
   ``KeyManagerUnavailable`` (503). Nothing is ever written unsealed.
4. Erasing a tenant destroys its DEKs (crypto-shredding): afterwards none of
   its sealed values opens anywhere, whatever copies exist. Other processes
   holding the key in their cache re-read its row at least every
   ``recheck_seconds`` and drop it once it is gone.
"""

from __future__ import annotations

import asyncio
import secrets
import string
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from strongroom.crypto.envelope import DataKey, SealContext, Unreadable, read_header
from strongroom.errors import DataUnreadable
from strongroom.ports import Clock, DataKeyRecord, DataKeyRepository, DataKeyState, KeyManager
from strongroom.services.single_flight import SingleFlight

LEASE: Final = 4096
DEFAULT_RECHECK_SECONDS: Final = 5.0
_ID_ALPHABET: Final = string.ascii_letters + string.digits
_UNREADABLE: Final = "The sealed value cannot be opened."


def new_dek_id() -> str:
    return "dk_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(20))


@dataclass(slots=True)
class _Cached:
    key: DataKey
    tenant: str
    expires_at: float
    #: Until when the key is known to still exist; afterwards its row is read again,
    #: so a tenant erased by another process stops opening within recheck_seconds.
    checked_until: float


@dataclass(slots=True)
class _Lease:
    dek_id: str
    remaining: int


class DataKeyService:
    """Seals and opens tenants' fields under their data keys."""

    def __init__(
        self,
        repository: DataKeyRepository,
        key_manager: KeyManager,
        clock: Clock,
        *,
        cache_seconds: float,
        cache_size: int,
        max_seals: int,
        recheck_seconds: float = DEFAULT_RECHECK_SECONDS,
    ) -> None:
        self._recheck_seconds = recheck_seconds
        self._repository = repository
        self._key_manager = key_manager
        self._clock = clock
        self._cache_seconds = cache_seconds
        self._cache_size = cache_size
        self._max_seals = max_seals
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._leases: dict[str, _Lease] = {}
        self._loading: SingleFlight[tuple[str, str], DataKey] = SingleFlight()
        self._locks: dict[str, asyncio.Lock] = {}
        #: Keys seen retired in the store: they still open, but never seal again.
        self._retired: set[str] = set()

    @property
    def key_manager(self) -> KeyManager:
        return self._key_manager

    # -- sealing ----------------------------------------------------------------

    async def seal(self, plaintext: bytes, context: SealContext) -> str:
        """``plaintext`` sealed under the tenant's active data key, bound to ``context``.

        Raises:
            KeyManagerUnavailable: no usable data key without the KMS.
            StorageUnavailable: the seal count could not be recorded.

        A key another process retired is noticed when its row is re-read (at
        least every ``recheck_seconds``); sealing then moves to the active key.
        """
        lease = self._leases.get(context.tenant)
        if lease is not None and lease.remaining > 0:
            cached = self._fresh(lease.dek_id, context.tenant)
            if cached is not None:
                lease.remaining -= 1
                return cached.seal(plaintext, context)
        key = await self._key_for_sealing(context.tenant)
        return key.seal(plaintext, context)

    async def seal_many(self, items: list[tuple[bytes, SealContext]]) -> list[str]:
        return [await self.seal(plaintext, context) for plaintext, context in items]

    async def _key_for_sealing(self, tenant: str) -> DataKey:
        lock = self._locks.setdefault(tenant, asyncio.Lock())
        async with lock:
            lease = self._leases.get(tenant)
            if lease is None or lease.remaining <= 0:
                lease = await self._new_lease(tenant)
            # Spend the seal before waiting on the KMS, so a concurrent fast-path
            # seal cannot use the same reserved seal.
            lease.remaining -= 1
            key = await self._load(lease.dek_id, tenant=tenant)
            if lease.dek_id not in self._retired:
                return key
            # Another process retired the key (rotation, re-encryption): move on.
            lease = await self._new_lease(tenant)
            lease.remaining -= 1
            return await self._load(lease.dek_id, tenant=tenant)

    async def _new_lease(self, tenant: str) -> _Lease:
        record = await self._repository.active(tenant)
        if record is not None:
            reserved = await self._repository.reserve(record.dek_id, LEASE)
            if reserved is not None:
                lease = _Lease(record.dek_id, LEASE)
                self._leases[tenant] = lease
                return lease
        record = await self._create(tenant)
        lease = _Lease(record.dek_id, record.reserved)
        self._leases[tenant] = lease
        return lease

    async def _create(self, tenant: str) -> DataKeyRecord:
        material, wrapped = await self._key_manager.generate_data_key()
        record = DataKeyRecord(
            dek_id=new_dek_id(),
            tenant=tenant,
            wrapped=wrapped.ciphertext,
            kek_version=wrapped.kek_version,
            created_at=self._clock.now(),
            state=DataKeyState.ACTIVE,
            reserved=min(LEASE, self._max_seals),
            max_seals=self._max_seals,
        )
        await self._repository.create(record)
        self._remember(DataKey(record.dek_id, record.kek_version, material), tenant)
        return record

    async def rotate_tenant(self, tenant: str) -> str:
        """Give the tenant a fresh data key for every seal from now on; returns its id."""
        lock = self._locks.setdefault(tenant, asyncio.Lock())
        async with lock:
            record = await self._create(tenant)
            self._leases[tenant] = _Lease(record.dek_id, record.reserved)
            return record.dek_id

    # -- opening ----------------------------------------------------------------

    async def open(self, sealed: str, context: SealContext) -> bytes:
        """The plaintext of a value sealed in ``context``.

        Raises:
            DataUnreadable: the value is altered, in another context, or its data
                key was destroyed or is refused by the minimum decryption version.
            KeyManagerUnavailable: the data key is not cached and the KMS is down.
        """
        try:
            header = read_header(sealed)
            key = await self._load(header.dek_id, tenant=context.tenant)
            return key.open(sealed, context)
        except (Unreadable, DataUnreadable):
            # One message whatever the cause: altered, shredded or refused.
            raise DataUnreadable(_UNREADABLE) from None

    async def _load(self, dek_id: str, *, tenant: str) -> DataKey:
        cached = self._fresh(dek_id, tenant)
        if cached is not None:
            return cached
        # Requests that find the key due for a re-read at once share one read (and
        # one unwrap by the key manager), rather than each asking the store.
        return await self._loading.run((dek_id, tenant), lambda: self._fetch(dek_id, tenant))

    async def _fetch(self, dek_id: str, tenant: str) -> DataKey:
        record = await self._repository.get(dek_id)
        if record is None or record.tenant != tenant:
            self._cache.pop(dek_id, None)
            raise DataUnreadable(_UNREADABLE)
        if record.state != DataKeyState.ACTIVE:
            self._retired.add(dek_id)
        still = self._cache.get(dek_id)
        if still is not None and still.expires_at > self._clock.now():
            still.checked_until = self._clock.now() + self._recheck_seconds
            return still.key
        material = await self._key_manager.unwrap(record.wrapped)
        key = DataKey(record.dek_id, record.kek_version, material)
        self._remember(key, tenant)
        return key

    def _fresh(self, dek_id: str, tenant: str) -> DataKey | None:
        """A cached key of ``tenant`` within its TTL whose row was seen recently."""
        cached = self._cache.get(dek_id)
        if cached is None or cached.tenant != tenant:
            return None
        now = self._clock.now()
        if cached.expires_at <= now:
            del self._cache[dek_id]
            return None
        if cached.checked_until <= now:
            return None
        return cached.key

    def _remember(self, key: DataKey, tenant: str) -> None:
        if self._cache_seconds <= 0:
            return
        now = self._clock.now()
        self._cache[key.dek_id] = _Cached(
            key,
            tenant,
            now + self._cache_seconds,
            now + min(self._recheck_seconds, self._cache_seconds),
        )
        self._cache.move_to_end(key.dek_id)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    # -- lifecycle ----------------------------------------------------------------

    async def shred_tenant(self, tenant: str) -> int:
        """Destroy every data key of the tenant; returns how many were destroyed."""
        records = await self._repository.of_tenant(tenant)
        destroyed = await self._repository.destroy_tenant(tenant)
        for record in records:
            self._cache.pop(record.dek_id, None)
        self._leases.pop(tenant, None)
        return destroyed
