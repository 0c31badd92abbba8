"""The migrations build exactly the schema the models describe, from empty, with one head, and back."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text

from jobwire.server.clock import ManualClock
from jobwire.server.model import JobStatus
from jobwire.server.store import AdminStore, Database, JobStore, create_engine
from jobwire.server.store.migrate import alembic_config, current_revision, downgrade, head_revision, upgrade
from jobwire.server.store.tables import metadata
from store_fixtures import new_job


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
                    "SELECT c.relname, a.attname, a.attstorage::text FROM pg_attribute a "
                    "JOIN pg_class c ON c.oid = a.attrelid "
                    "WHERE (c.relname IN ('job_payloads', 'job_chunks') AND a.attname = 'data') "
                    "OR (c.relname = 'jobs' AND a.attname IN ('input', 'output'))"
                )
            )
            storage = {f"{name}.{column}": str(kind) for name, column, kind in rows.all()}
    finally:
        await engine.dispose()
    # EXTERNAL: out of line, not compressed; PLAIN: the small documents in the job's row, as they are.
    assert storage == {
        "job_payloads.data": "e",
        "job_chunks.data": "e",
        "jobs.input": "p",
        "jobs.output": "p",
    }


async def test_downgrading_moves_the_small_documents_back_to_their_table(empty_database_url: str) -> None:
    await asyncio.to_thread(upgrade, empty_database_url)
    clock = ManualClock()
    db = Database(empty_database_url)
    store = JobStore(db)
    try:
        await AdminStore(db).create_endpoint(
            "inline", clock.now(), {"execution_timeout_ms": 600_000, "max_attempts": 3}
        )
        await store.enqueue_job(new_job("j", endpoint="inline", input=b'"in"'), clock.now())
        (claimed,) = await store.claim_jobs(
            "inline", "w1", 1, clock.now() + timedelta(seconds=30), clock.now()
        )
        assert await store.finish_job(
            "j", claimed.job.attempt, JobStatus.COMPLETED, b'"out"', None, clock.now()
        )
    finally:
        await store.close()
        await db.dispose()
    await asyncio.to_thread(downgrade, empty_database_url, "7b2e4f6a8c10")
    engine = create_engine(empty_database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(text("SELECT kind, data FROM job_payloads ORDER BY kind"))
            assert [(kind, bytes(data)) for kind, data in rows.all()] == [
                ("input", b'"in"'),
                ("output", b'"out"'),
            ]
    finally:
        await engine.dispose()
