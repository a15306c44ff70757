"""PostgreSQL adapters: the event log and the audit log, for gateways sharing one database.

The repositories (tenants, keys, usage, vault) are the dialect-neutral ones in
``strongroom.adapters.sql``; this package holds what SQLite does on its own
writer thread and PostgreSQL does with row locks: offset allocation, consumer
group claims and the single audit writer. Imported only when
``STRONGROOM_DATABASE_URL`` names PostgreSQL.
"""

from __future__ import annotations

from strongroom.adapters.postgres.audit import PostgresAuditLog
from strongroom.adapters.postgres.log import PostgresEventLog

__all__ = ["PostgresAuditLog", "PostgresEventLog"]
