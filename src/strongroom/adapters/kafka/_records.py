"""How the gateway's records look on the broker.

The value is the record's payload, the key its partition key (UTF-8), and four
headers carry what the index and readers need: the tenant, the record id, the
claim of the append that produced this copy, and the append's time (``repr``
of the float, so it reads back exactly).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from strongroom.adapters.kafka._broker import Fetched, Outgoing
from strongroom.errors import StorageUnavailable
from strongroom.ports import NewRecord, StoredRecord

HEADER_TENANT: Final = "strongroom.tenant"
HEADER_ID: Final = "strongroom.id"
HEADER_CLAIM: Final = "strongroom.claim"
HEADER_AT: Final = "strongroom.appended_at"


@dataclass(frozen=True, slots=True)
class Found:
    """A record read from the broker, with what its headers say."""

    offset: int
    tenant: str
    record_id: str
    claim: str
    appended_at: float
    key: str
    payload: bytes

    def stored(self, topic: str) -> StoredRecord:
        return StoredRecord(
            topic, self.offset, self.tenant, self.record_id, self.key, self.appended_at,
            self.payload,
        )  # fmt: skip


def parse(fetched: Fetched) -> Found | None:
    """The record, or None for one the gateway did not write (no or bad headers)."""
    headers = fetched.headers
    try:
        return Found(
            fetched.offset,
            headers[HEADER_TENANT].decode(),
            headers[HEADER_ID].decode(),
            headers[HEADER_CLAIM].decode(),
            float(headers[HEADER_AT]),
            fetched.key.decode(),
            fetched.value,
        )
    except (KeyError, ValueError):
        return None


def outgoing(record: NewRecord, claim: str, appended_at: float) -> Outgoing:
    return Outgoing(
        key=record.key.encode(),
        value=record.payload,
        headers=[
            (HEADER_TENANT, record.tenant.encode()),
            (HEADER_ID, record.record_id.encode()),
            (HEADER_CLAIM, claim.encode()),
            (HEADER_AT, repr(appended_at).encode()),
        ],
    )


def check(records: Sequence[NewRecord]) -> None:
    """Refuse, before anything is claimed or produced, a record no engine could store.

    Raises:
        StorageUnavailable: a field has the wrong type or length (as a database
            refuses such a row); nothing was written.
    """
    for record in records:
        if not (
            isinstance(record.tenant, str)
            and 0 < len(record.tenant) <= 64
            and isinstance(record.record_id, str)
            and 0 < len(record.record_id) <= 200
            and isinstance(record.key, str)
            and isinstance(record.payload, bytes)
        ):
            raise StorageUnavailable("A record could not be stored: it is malformed.")
