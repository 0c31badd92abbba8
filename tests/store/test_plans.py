"""The hot path's statements find their rows through an index whatever the table's statistics say.

asyncpg prepares each statement once per connection, and after five runs Postgres may keep one generic
plan for it. These tests ask for that generic plan (`plan_cache_mode = force_generic_plan`) on a hot-path
session, on a new database (empty, never analyzed: where a server starts) and on an analyzed one with
ended and running jobs (where it spends its life), and read which index each statement uses.

A plan that walks a partial index of running attempts, or the table, to find a job by id costs more with
every job finished since the last vacuum (each leaves dead entries): that is what these guard against.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from jobwire.server.clock import ManualClock
from jobwire.server.model import JobStatus
from jobwire.server.store import Database, JobStore
from jobwire.server.store import jobs as statements
from jobwire.server.store.database import Sql
from store_fixtures import EP, running


def _params(now: datetime) -> dict[str, dict[str, Any]]:
    """Parameters for each statement (a generic plan does not depend on them, but EXPLAIN binds them)."""
    one = {
        "id": "j",
        "attempt": 1,
        "status": "COMPLETED",
        "error": None,
        "output": b"{}",
        "now": now,
        "seq": None,
        "data": b"{}",
        "worker_ids": ["w1"],
        "lease_until": now,
        "limit": 10,
        "reason": "gone",
        "endpoint": EP,
        "worker_id": "w1",
    }
    reports = {
        "ids": ["j"],
        "attempts": [1],
        "statuses": ["COMPLETED"],
        "outputs": [b"{}"],
        "errors": [None],
        "nows": [now],
    }
    submissions = {
        "id": ["k"],
        "endpoint": [EP],
        "priority": [0],
        "max_attempts": [1],
        "sync": [False],
        "webhook": [None],
        "execution_timeout_ms": [600_000],
        "ttl_ms": [86_400_000],
        "retention_ms": [1_800_000],
        "now": [now],
        "input": [b"{}"],
        "s3_config": [None],
        "worker_id": ["w1"],
        "lease_until": [now],
    }
    return {
        "one": one,
        "reports": {**one, **reports},
        "write": {**submissions, **reports},
    }


#: Statements that find a running attempt by its id: through the unique index on id, nothing else.
BY_ID: dict[str, tuple[Sql, str]] = {
    "FINISH": (statements.FINISH, "one"),
    "FINISH_MANY": (statements.FINISH_MANY, "reports"),
    "WRITE_MANY": (statements.WRITE_MANY, "write"),
    "APPEND_CHUNK": (statements.APPEND_CHUNK, "one"),
    "SET_PROGRESS": (statements.SET_PROGRESS, "one"),
    "RELEASE_ATTEMPTS": (statements.RELEASE_ATTEMPTS, "reports"),
}

#: Statements that walk the running attempts: through the lease or deadline index, never the table.
BY_RUNNING: dict[str, tuple[Sql, str]] = {
    "EXTEND_LEASES": (statements.EXTEND_LEASES, "one"),
    "TIME_OUT": (statements.TIME_OUT, "one"),
    "RESCUE_EXPIRED": (statements.RESCUE_EXPIRED, "one"),
}


async def _jobs_scans(db: Database, clock: ManualClock, entry: tuple[Sql, str]) -> list[str]:
    """The lines of the statement's generic plan that scan `jobs` or one of its indexes."""
    statement, kind = entry
    params = _params(clock.now())[kind]
    async with db.connection() as conn:
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        try:
            rows = await conn.fetch("EXPLAIN (COSTS OFF) " + statement.source, *statement.args(params))
        finally:
            await conn.execute("RESET plan_cache_mode")
    return [line for (line,) in rows if "Scan" in line and any(on in line for on in (" on jobs", "_jobs_"))]


async def _in_use(store: JobStore, db: Database, clock: ManualClock) -> None:
    """A day's history (ended jobs by the ten thousand, written directly: the store would take minutes),
    a few jobs ended and a few running through the store, then fresh statistics."""
    async with db.connection() as conn:
        await conn.execute(
            """
            INSERT INTO jobs (id, endpoint, status, priority, max_attempts, sync, execution_timeout_ms,
                              ttl_ms, retention_ms, created_at, queued_at, expires_at, attempt, started_at,
                              finished_at, retain_until)
            SELECT 'history-' || g, $1, 'COMPLETED', 0, 1, false, 600000, 86400000, 86400000, $2, $2,
                   day_after, 1, $2, $2, day_after
            FROM generate_series(1, 30000) g,
                 (SELECT CAST($2 AS timestamptz) + interval '1 day') AS t(day_after)
            """,
            EP,
            clock.now(),
        )
    for job_id, attempt in await running(store, clock, 10, prefix="ended"):
        await store.finish_job(job_id, attempt, JobStatus.COMPLETED, b"{}", None, clock.now())
    await running(store, clock, 20)
    async with db.connection() as conn:
        await conn.execute("ANALYZE jobs")


@pytest.fixture(params=["new database", "analyzed, in use"])
async def table_state(
    request: pytest.FixtureRequest, store: JobStore, db: Database, clock: ManualClock
) -> str:
    if request.param == "analyzed, in use":
        await _in_use(store, db, clock)
    return str(request.param)


@pytest.mark.parametrize("name", list(BY_ID))
async def test_a_running_attempt_is_found_by_its_id(
    db: Database, clock: ManualClock, table_state: str, name: str
) -> None:
    scans = await _jobs_scans(db, clock, BY_ID[name])
    lookups = [line for line in scans if "ix_jobs_claim" not in line]  # WRITE_MANY's "older jobs waiting?"
    assert lookups, scans
    assert all("Index Scan using uq_jobs_id on jobs" in line for line in lookups), scans


@pytest.mark.parametrize("name", list(BY_RUNNING))
async def test_the_running_attempts_are_walked_through_their_index(
    db: Database, clock: ManualClock, table_state: str, name: str
) -> None:
    scans = await _jobs_scans(db, clock, BY_RUNNING[name])
    assert scans, scans
    assert not any("Seq Scan" in line for line in scans), scans
    assert any("ix_jobs_lease" in line or "ix_jobs_deadline" in line for line in scans), scans
