"""The workers table: registration by session, batched presence, and health counts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from jobwire.server.clock import ManualClock
from jobwire.server.store import (
    AdminStore,
    Database,
    WorkerCounts,
    WorkerPresence,
    WorkerRow,
    WorkerStore,
)


@pytest.fixture
async def workers(database_url: str) -> AsyncIterator[WorkerStore]:
    db = Database(database_url)
    await AdminStore(db).create_endpoint(
        "ep", ManualClock().now(), {"execution_timeout_ms": 600_000, "max_attempts": 3}
    )
    yield WorkerStore(db)
    await db.dispose()


def row(worker_id: str, session: str = "s1", slots: int = 2) -> WorkerRow:
    return WorkerRow(worker_id, "ep", session, "grpc", slots, "test", "[]")


async def test_counts_follow_load_and_liveness(workers: WorkerStore) -> None:
    clock = ManualClock()
    for worker_id in ("idle", "half", "full", "silent"):
        await workers.register(row(worker_id), clock.now())
    clock.advance(seconds=5)
    await workers.touch(
        [
            WorkerPresence("idle", "s1", 0, False),
            WorkerPresence("half", "s1", 1, False),
            WorkerPresence("full", "s1", 2, False),
        ],
        clock.now(),
    )
    counts = await workers.count("ep", stale_before=clock.now() - timedelta(seconds=3))
    assert counts == WorkerCounts(idle=1, running=2, ready=2, unhealthy=1)


async def test_only_the_registering_session_removes_or_touches_a_row(workers: WorkerStore) -> None:
    clock = ManualClock()
    await workers.register(row("w", "old"), clock.now())
    await workers.register(row("w", "new"), clock.now())  # the worker reconnected
    await workers.touch([WorkerPresence("w", "old", 2, False)], clock.now())
    await workers.remove("w", "old")
    counts = await workers.count("ep", stale_before=clock.now() - timedelta(seconds=1))
    assert counts == WorkerCounts(idle=1, running=0, ready=1, unhealthy=0)
    await workers.remove("w", "new")
    assert await workers.count("ep", clock.now()) == WorkerCounts()


async def test_prune_forgets_workers_of_dead_replicas(workers: WorkerStore) -> None:
    clock = ManualClock()
    await workers.register(row("gone"), clock.now())
    clock.advance(minutes=5)
    await workers.register(row("here"), clock.now())
    await workers.prune(before=clock.now() - timedelta(minutes=1))
    counts = await workers.count("ep", stale_before=clock.now() - timedelta(seconds=1))
    assert counts == WorkerCounts(idle=1, running=0, ready=1, unhealthy=0)
