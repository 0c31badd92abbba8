"""Helpers of the store tests (their fixtures are in tests/store/conftest.py)."""

from __future__ import annotations

from datetime import timedelta

from jobwire.server.clock import ManualClock
from jobwire.server.model import NewJob, Priority
from jobwire.server.store import JobStore

EP = "ep"
OTHER = "other"


def new_job(
    job_id: str, *, endpoint: str = EP, low: bool = False, ttl_ms: int = 86_400_000, **fields: object
) -> NewJob:
    """A queued-to-be job of `endpoint` with ordinary settings; `fields` override any NewJob field."""
    values: dict[str, object] = dict(
        id=job_id,
        endpoint=endpoint,
        input=b'{"n": 1}',
        webhook=None,
        s3_config=None,
        priority=Priority.LOW if low else Priority.NORMAL,
        execution_timeout_ms=600_000,
        ttl_ms=ttl_ms,
        retention_ms=1_800_000,
        max_attempts=3,
        sync=False,
    )
    values.update(fields)
    return NewJob(**values)  # type: ignore[arg-type]


async def running(store: JobStore, clock: ManualClock, n: int, prefix: str = "job") -> list[tuple[str, int]]:
    """`n` jobs queued and claimed by worker w1: their (id, attempt)."""
    for i in range(n):
        await store.enqueue_job(new_job(f"{prefix}-{i}"), clock.now())
    claimed = await store.claim_jobs(EP, "w1", n, clock.now() + timedelta(seconds=30), clock.now())
    return [(c.job.id, c.job.attempt) for c in claimed]
