"""The store's two ways into Postgres (`Database`): the hot path's pool and SQLAlchemy's engine."""

from __future__ import annotations

import asyncio

import asyncpg  # type: ignore[import-untyped,unused-ignore]
from sqlalchemy import text

from jobwire.server.store import Database, libpq_dsn
from jobwire.server.store.database import sql

ONE = sql("SELECT CAST(:n AS integer) AS n")


async def connected(observer: asyncpg.Connection) -> int:
    count: int = await observer.fetchval(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE application_name = 'jobwire' AND datname = current_database()"
    )
    return count


async def test_the_hot_path_stays_within_its_pool_and_dispose_closes_every_connection(
    database_url: str,
) -> None:
    db = Database(database_url, pool_size=2)
    observer = await asyncpg.connect(libpq_dsn(database_url))
    try:
        rows = await asyncio.gather(*(db.fetch_one(ONE, {"n": i}) for i in range(10)))
        assert [row["n"] for row in rows if row is not None] == list(range(10))
        assert await connected(observer) == 2  # ten statements at once, two connections
        async with db.transaction() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar() == 1
        assert await connected(observer) == 3  # the engine's, beside the pool's

        await db.dispose()
        # A backend leaves pg_stat_activity a moment after its client hung up: each look is a round trip.
        while await connected(observer):
            pass
    finally:
        await observer.close()
