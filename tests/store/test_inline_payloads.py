"""Small inputs and outputs live in the job's row, larger ones in `job_payloads`: every path that writes
or reads a document gives back the same bytes on either side of the limit."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg  # type: ignore[import-untyped,unused-ignore]
import pytest

from jobwire.server.clock import ManualClock
from jobwire.server.model import JobStatus
from jobwire.server.store import Database, JobStore, WebhookStore, libpq_dsn
from jobwire.server.store.jobs import INLINE_MAX
from store_fixtures import EP, new_job, running

#: The largest document kept in the row, and the smallest kept apart.
SIZES = [INLINE_MAX, INLINE_MAX + 1]


def document(size: int) -> bytes:
    """A JSON string of exactly `size` bytes."""
    return b'"' + b"x" * (size - 2) + b'"'


async def where_stored(database_url: str, job_id: str, kind: str) -> str:
    """`row` when the job's row holds the document, `apart` when job_payloads does (never both)."""
    conn = await asyncpg.connect(libpq_dsn(database_url))
    try:
        row = await conn.fetchrow(
            f"SELECT j.{kind} IS NOT NULL AS inline, p.job_seq IS NOT NULL AS apart FROM jobs j "
            "LEFT JOIN job_payloads p ON p.job_seq = j.seq AND p.kind = $2 WHERE j.id = $1",
            job_id,
            kind,
        )
    finally:
        await conn.close()
    assert row is not None
    assert not (row["inline"] and row["apart"]), "a document stored twice"
    return "row" if row["inline"] else "apart" if row["apart"] else "nowhere"


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("keyed", [False, True], ids=["batched", "idempotency-key"])
async def test_an_input_reaches_the_worker_from_either_place(
    store: JobStore, clock: ManualClock, database_url: str, size: int, keyed: bool
) -> None:
    job = new_job("j", input=document(size), idempotency_key="key" if keyed else None)
    await store.enqueue_job(job, clock.now())
    assert await where_stored(database_url, "j", "input") == ("row" if size <= INLINE_MAX else "apart")
    (claimed,) = await store.claim_jobs(EP, "w1", 10, clock.now() + timedelta(seconds=30), clock.now())
    assert claimed.input == document(size)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("together", [False, True], ids=["alone", "batched"])
async def test_an_output_is_read_back_from_either_place(
    store: JobStore, clock: ManualClock, database_url: str, size: int, together: bool
) -> None:
    (a, attempt_a), (b, attempt_b) = await running(store, clock, 2)
    finishes = [store.finish_job(a, attempt_a, JobStatus.COMPLETED, document(size), None, clock.now())]
    if together:  # both reach the writer before it runs: one statement for the two
        finishes.append(store.finish_job(b, attempt_b, JobStatus.COMPLETED, b"1", None, clock.now()))
    assert all(await asyncio.gather(*finishes))
    assert await where_stored(database_url, a, "output") == ("row" if size <= INLINE_MAX else "apart")
    job = await store.get_job(EP, a, clock.now())
    assert job is not None and job.output == document(size)


@pytest.mark.parametrize("size", SIZES)
async def test_a_retried_job_shows_no_output_of_its_failed_attempt(
    store: JobStore, clock: ManualClock, size: int
) -> None:
    ((a, attempt),) = await running(store, clock, 1)
    assert await store.finish_job(a, attempt, JobStatus.FAILED, document(size), "boom", clock.now())
    retried = await store.retry_job(EP, a, 3, clock.now())
    assert retried is not None and retried.status == JobStatus.IN_QUEUE
    job = await store.get_job(EP, a, clock.now())
    assert job is not None and job.output is None
    # The next attempt's input is still there, and its output replaces nothing stale.
    (claimed,) = await store.claim_jobs(EP, "w1", 1, clock.now() + timedelta(seconds=30), clock.now())
    assert claimed.input == b'{"n": 1}'
    assert await store.finish_job(a, claimed.job.attempt, JobStatus.COMPLETED, b"2", None, clock.now())
    job = await store.get_job(EP, a, clock.now())
    assert job is not None and job.output == b"2"


@pytest.mark.parametrize("size", SIZES)
async def test_a_webhook_carries_the_input_and_output_from_either_place(
    store: JobStore, db: Database, clock: ManualClock, size: int
) -> None:
    await store.enqueue_job(
        new_job("h", input=document(size), webhook="http://127.0.0.1:9/hook"), clock.now()
    )
    (claimed,) = await store.claim_jobs(EP, "w1", 1, clock.now() + timedelta(seconds=30), clock.now())
    assert await store.finish_job(
        "h", claimed.job.attempt, JobStatus.COMPLETED, document(size), None, clock.now()
    )
    (delivery,) = await WebhookStore(db).claim(clock.now(), clock.now() + timedelta(seconds=30))
    assert (delivery.input, delivery.job.output) == (document(size), document(size))
