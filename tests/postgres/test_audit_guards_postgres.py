"""On PostgreSQL the database itself refuses to change the audit trail.

The migrations install triggers; the documented role setup (docs/audit.md)
gives the application role no UPDATE, DELETE or TRUNCATE on audit tables and
no ownership of the schema.
"""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from strongroom.adapters.sql.engine import create_engine, upgrade

AUDIT_ROW = (
    "INSERT INTO audit_records (seq, time, tenant, actor, action, outcome, data, leaf) "
    "VALUES ($1, 0, NULL, 'cli', 'test', 'success', 'x'::bytea, $2)"
)


async def _migrated(url: str) -> asyncpg.Connection:
    engine = create_engine(url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()
    connection = await asyncpg.connect(url)
    await connection.execute(AUDIT_ROW, 0, b"\x00" * 32)
    await connection.execute(AUDIT_ROW, 1, b"\x01" * 32)
    return connection


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_records SET actor = 'forged' WHERE seq = 0",
        "DELETE FROM audit_records WHERE seq = 1",
        "TRUNCATE audit_records",
        "UPDATE audit_prune_horizon SET horizon = 2 WHERE id = 1",
        "DELETE FROM audit_prune_horizon",
        "INSERT INTO audit_records (seq, time, actor, action, outcome, data, leaf) "
        "VALUES (0, 0, 'x', 'x', 'x', 'x'::bytea, 'x'::bytea) "
        "ON CONFLICT (seq) DO UPDATE SET actor = 'forged'",
    ],
    ids=["update", "delete", "truncate", "horizon-past-checkpoint", "horizon-delete", "upsert"],
)
async def test_triggers_refuse_changes_even_to_the_owner(postgres_url: str, statement: str) -> None:
    connection = await _migrated(postgres_url)
    try:
        with pytest.raises(asyncpg.RaiseError):
            await connection.execute(statement)
        assert await connection.fetchval("SELECT count(*) FROM audit_records") == 2
        assert await connection.fetchval("SELECT actor FROM audit_records WHERE seq = 0") == "cli"
    finally:
        await connection.close()


async def test_the_application_role_cannot_alter_or_rewrite(postgres_url: str) -> None:
    owner = await _migrated(postgres_url)
    role = "strongroom_app_" + uuid.uuid4().hex[:8]
    try:
        database = postgres_url.rsplit("/", 1)[1]
        await owner.execute(f"CREATE ROLE {role} LOGIN")
        await owner.execute(f'GRANT CONNECT ON DATABASE "{database}" TO {role}')
        await owner.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        await owner.execute(
            f"GRANT SELECT, INSERT ON audit_records, audit_nodes, audit_checkpoints TO {role}"
        )
        await owner.execute(f"GRANT SELECT, UPDATE ON audit_prune_horizon TO {role}")
        app_url = postgres_url.replace("postgres@", f"{role}@", 1)
        app = await asyncpg.connect(app_url)
        try:
            await app.execute(AUDIT_ROW, 2, b"\x02" * 32)
            for statement in (
                "UPDATE audit_records SET actor = 'forged' WHERE seq = 0",
                "DELETE FROM audit_records WHERE seq = 0",
                "TRUNCATE audit_records",
                "ALTER TABLE audit_records DISABLE TRIGGER ALL",
                "DROP TRIGGER audit_records_no_update ON audit_records",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await app.execute(statement)
        finally:
            await app.close()
        assert await owner.fetchval("SELECT count(*) FROM audit_records") == 3
    finally:
        await owner.execute(f"DROP OWNED BY {role}")
        await owner.execute(f"DROP ROLE {role}")
        await owner.close()
