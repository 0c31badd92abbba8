"""Every pair of states, tried through the store: a transition happens exactly when TRANSITIONS allows it."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest

from jobwire.server.clock import ManualClock
from jobwire.server.model import TRANSITIONS, JobStatus, NewJob, Priority
from jobwire.server.store import AdminStore, Database, JobStore

EP = "ep"
S = JobStatus


async def _put_in(store: JobStore, clock: ManualClock, job_id: str, status: JobStatus) -> None:
    """Brings a fresh job to `status` through allowed transitions only."""
    job = NewJob(job_id, EP, b"{}", None, None, Priority.NORMAL, 600_000, 86_400_000, 1_800_000, 3, False)
    await store.enqueue_job(job, clock.now())
    if status is S.IN_QUEUE:
        return
    if status is S.CANCELLED:
        await store.cancel_job(EP, job_id, clock.now())
        return
    claimed = await store.claim_jobs(EP, "w", 1, clock.now() + timedelta(seconds=30), clock.now())
    assert [c.job.id for c in claimed] == [job_id]
    if status is not S.IN_PROGRESS:
        await store.finish_job(job_id, 1, status, None, None, clock.now())


def _attempts(store: JobStore, clock: ManualClock) -> dict[JobStatus, Callable[[str], Awaitable[bool]]]:
    """For each target state, the store operation that tries to move a job there."""
    lease = clock.now() + timedelta(seconds=30)

    async def claim(job_id: str) -> bool:
        return any(c.job.id == job_id for c in await store.claim_jobs(EP, "w2", 10, lease, clock.now()))

    async def finish(job_id: str, status: JobStatus) -> bool:
        job = await store.get_job(EP, job_id, clock.now())
        return job is not None and await store.finish_job(
            job_id, job.attempt, status, None, None, clock.now()
        )

    async def requeue(job_id: str) -> bool:
        return await store.retry_job(EP, job_id, 3, clock.now()) is not None

    async def cancel(job_id: str) -> bool:
        return await store.cancel_job(EP, job_id, clock.now()) is not None

    return {
        S.IN_PROGRESS: claim,
        S.IN_QUEUE: requeue,
        S.CANCELLED: cancel,
        S.COMPLETED: lambda j: finish(j, S.COMPLETED),
        S.FAILED: lambda j: finish(j, S.FAILED),
        S.TIMED_OUT: lambda j: finish(j, S.TIMED_OUT),
    }


# IN_PROGRESS -> IN_QUEUE (a lost lease) is driven by the lease reaper, not by a client call.
PAIRS = [(a, b) for a, b in itertools.product(S, S) if a is not b and (a, b) != (S.IN_PROGRESS, S.IN_QUEUE)]


@pytest.mark.parametrize(("start", "target"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
async def test_transition(db: Database, start: JobStatus, target: JobStatus) -> None:
    clock = ManualClock()
    await AdminStore(db).create_endpoint(
        EP, clock.now(), {"execution_timeout_ms": 600_000, "max_attempts": 3}
    )
    store = JobStore(db)
    await _put_in(store, clock, "j", start)
    moved = await _attempts(store, clock)[target]("j")
    assert moved == ((start, target) in TRANSITIONS)
    job = await store.get_job(EP, "j", clock.now())
    assert job is not None
    assert job.status is (target if moved else start)
