"""Choosing the database by URL: schema upgrades, refusing an old schema, connection failures."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import asyncpg
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text

from strongroom.adapters.sql.engine import MIGRATIONS, SchemaOutOfDate, create_engine, head_revision
from strongroom.adapters.store import open_store
from strongroom.errors import ConfigurationError, StorageUnavailable
from strongroom.ports import NewRecord
from support_app import make_settings
from support_cli import cli

TOPIC = "payments.tokenized"


def postgres_only(store_url: str) -> None:
    if not store_url.startswith("postgres"):
        pytest.skip("PostgreSQL only")


async def upgrade_to(url: str, revision: str) -> None:
    def run(connection: Connection) -> None:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(run)
            # Records written by the previous release, before offsets had counters.
            await connection.execute(
                text(
                    'INSERT INTO stream_records (topic, "offset", tenant, record_id, key, '
                    "appended_at, payload) VALUES (:topic, :offset, 't1', :id, 'k', 0, :payload)"
                ),
                [
                    {"topic": TOPIC, "offset": n, "id": f"old-{n}", "payload": b"x"}
                    for n in range(3)
                ],
            )
    finally:
        await engine.dispose()


async def test_an_old_schema_is_refused_until_db_upgrade_runs(
    store_url: str, tmp_path: Path
) -> None:
    await upgrade_to(store_url, "0004")
    settings = make_settings(tmp_path, database_url=store_url)
    with pytest.raises(SchemaOutOfDate, match="run 'strongroom db upgrade'"):
        await open_store(settings)
    served = await asyncio.to_thread(
        cli, "serve", "--port", "1", "--data-dir", str(tmp_path / "data"),
        env={"STRONGROOM_DATABASE_URL": store_url, "STRONGROOM_API_KEYS": "k" * 20},
    )  # fmt: skip
    assert served.returncode != 0
    assert "strongroom db upgrade" in served.stderr
    upgraded = await asyncio.to_thread(
        cli, "db", "upgrade", "--database-url", store_url, "--data-dir", str(tmp_path / "data")
    )
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.strip() == f"schema at {head_revision()} (was 0004)"
    current = await asyncio.to_thread(cli, "db", "current", "--database-url", store_url)
    assert current.stdout.strip() == f"{head_revision()} (up to date)"
    store = await open_store(settings)
    try:
        # The new offsets continue after the records the old release wrote.
        await store.log.append(TOPIC, [NewRecord("t1", "new", "k", b"y")])
        stored = await store.log.read(TOPIC, tenant="t1", after=None, limit=10)
        assert [(r.offset, r.record_id) for r in stored][-1] == (3, "new")
    finally:
        await store.aclose()


async def test_db_upgrade_creates_a_schema_in_an_empty_database(
    store_url: str, tmp_path: Path
) -> None:
    upgraded = await asyncio.to_thread(
        cli, "db", "upgrade", "--database-url", store_url, "--data-dir", str(tmp_path / "data")
    )
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.strip() == f"schema at {head_revision()} (was empty)"
    again = await asyncio.to_thread(cli, "db", "upgrade", "--database-url", store_url)
    assert again.stdout.strip() == f"schema at {head_revision()}"


async def test_gateways_starting_together_migrate_once(store_url: str, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, database_url=store_url)
    stores = await asyncio.gather(*(open_store(settings, migrate=True) for _ in range(3)))
    for store in stores:
        await store.aclose()


async def test_an_unreachable_server_is_storage_unavailable(store_url: str, tmp_path: Path) -> None:
    postgres_only(store_url)
    settings = make_settings(tmp_path, database_url="postgresql://postgres@127.0.0.1:1/nowhere")
    with pytest.raises(StorageUnavailable):
        await open_store(settings)


async def test_a_missing_driver_names_the_extra(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    postgres_only(store_url)
    monkeypatch.setitem(sys.modules, "asyncpg", None)
    with pytest.raises(ConfigurationError, match=r"strongroom\[postgres\]"):
        create_engine(store_url)


async def test_the_store_reconnects_after_the_server_drops_its_connections(
    store_url: str, tmp_path: Path
) -> None:
    postgres_only(store_url)
    store = await open_store(make_settings(tmp_path, database_url=store_url))
    try:
        await store.log.append(TOPIC, [NewRecord("t1", "a", "k", b"x")])
        await store.audit.append([])
        admin = await asyncpg.connect(store_url)
        try:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await admin.close()
        result = await store.log.append(TOPIC, [NewRecord("t1", "b", "k", b"x")])
        assert result.accepted == ("b",)
        await store.log.check_writable()
    finally:
        await store.aclose()


async def test_a_read_only_database_is_not_ready(store_url: str, tmp_path: Path) -> None:
    postgres_only(store_url)
    store = await open_store(make_settings(tmp_path, database_url=store_url))
    try:
        admin = await asyncpg.connect(store_url)
        try:
            name = store_url.rsplit("/", 1)[1]
            await admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await admin.close()
        with pytest.raises(StorageUnavailable):
            await store.log.check_writable()
        with pytest.raises(StorageUnavailable):
            await store.log.append(TOPIC, [NewRecord("t1", "a", "k", b"x")])
    finally:
        await store.aclose()


async def test_concurrent_appends_share_a_transaction(store_url: str, tmp_path: Path) -> None:
    postgres_only(store_url)
    store = await open_store(make_settings(tmp_path, database_url=store_url))
    try:
        await asyncio.gather(
            *(store.log.append(TOPIC, [NewRecord("t1", str(n), "k", b"x")]) for n in range(100))
        )
    finally:
        await store.aclose()
    admin = await asyncpg.connect(store_url)
    try:
        # Rows written by one transaction share its id (xmin): group commit at work.
        transactions = await admin.fetchval("SELECT count(DISTINCT xmin::text) FROM stream_records")
    finally:
        await admin.close()
    assert transactions <= 5


def test_only_sqlite_and_postgresql_urls_are_accepted(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, database_url="mysql://root@localhost/strongroom")
    with pytest.raises(ConfigurationError, match="STRONGROOM_DATABASE_URL"):
        asyncio.run(open_store(settings))
