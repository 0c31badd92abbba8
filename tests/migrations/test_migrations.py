"""The migrations build exactly the schema the models describe, from empty, with one head, and back."""

from __future__ import annotations

import asyncio

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text

from jobwire.server.store import create_engine
from jobwire.server.store.migrate import alembic_config, current_revision, downgrade, head_revision, upgrade
from jobwire.server.store.tables import metadata


def _diff(connection: Connection) -> list[object]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "compare_server_default": True}
    )
    return list(compare_metadata(context, metadata))


async def test_there_is_exactly_one_head() -> None:
    script = ScriptDirectory.from_config(alembic_config("postgresql+asyncpg://unused/"))
    assert len(script.get_heads()) == 1


async def test_upgrade_from_empty_matches_the_models(empty_database_url: str) -> None:
    await asyncio.to_thread(upgrade, empty_database_url)
    engine = create_engine(empty_database_url)
    try:
        assert await current_revision(engine) == head_revision()
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
    finally:
        await engine.dispose()


async def test_downgrade_to_base_and_up_again(empty_database_url: str) -> None:
    await asyncio.to_thread(upgrade, empty_database_url)
    await asyncio.to_thread(downgrade, empty_database_url, "base")
    engine = create_engine(empty_database_url)
    try:
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
        assert set(tables) <= {"alembic_version"}
        await asyncio.to_thread(upgrade, empty_database_url)
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()


async def test_payloads_are_stored_uncompressed(empty_database_url: str) -> None:
    await asyncio.to_thread(upgrade, empty_database_url)
    engine = create_engine(empty_database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT c.relname, a.attstorage::text FROM pg_attribute a "
                    "JOIN pg_class c ON c.oid = a.attrelid "
                    "WHERE c.relname IN ('job_payloads', 'job_chunks') AND a.attname = 'data'"
                )
            )
            storage: dict[str, str] = {str(name): str(kind) for name, kind in rows.all()}
    finally:
        await engine.dispose()
    assert storage == {"job_payloads": "e", "job_chunks": "e"}  # EXTERNAL: out of line, not compressed
