"""The job store against a real Postgres: every transition, its guard, and time as a parameter."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

from jobwire.server.clock import ManualClock
from jobwire.server.model import Job, JobStatus
from jobwire.server.store import JobStore
from store_fixtures import EP, new_job


async def test_enqueue_then_get_returns_the_queued_view(store: JobStore, clock: ManualClock) -> None:
    await store.enqueue_job(new_job("j1"), clock.now())
    job = await store.get_job(EP, "j1", clock.now())
    assert job is not None
    assert (job.id, job.status, job.attempt, job.output, job.started_at) == (
        "j1",
        JobStatus.IN_QUEUE,
        0,
        None,
        None,
    )
    assert job.queued_at == clock.now()


async def test_get_is_scoped_to_the_endpoint(store: JobStore, clock: ManualClock) -> None:
    await store.enqueue_job(new_job("j1"), clock.now())
    assert await store.get_job("other", "j1", clock.now()) is None
    assert await store.cancel_job("other", "j1", clock.now()) is None
    assert await store.purge_queue("other", clock.now()) == 0


async def test_claim_orders_normal_before_low_priority_then_oldest(
    store: JobStore, clock: ManualClock
) -> None:
    for job_id, low in [("low-1", True), ("n-1", False), ("low-2", True), ("n-2", False)]:
        await store.enqueue_job(new_job(job_id, low=low), clock.now())
        clock.advance(milliseconds=1)
    claimed = await store.claim_jobs(EP, "w1", 3, clock.now() + timedelta(seconds=30), clock.now())
    assert [c.job.id for c in claimed] == ["n-1", "n-2", "low-1"]
    assert all(c.job.status is JobStatus.IN_PROGRESS and c.job.attempt == 1 for c in claimed)
    assert claimed[0].input == b'{"n": 1}'


async def test_concurrent_claims_never_hand_out_a_job_twice(store: JobStore, clock: ManualClock) -> None:
    for i in range(40):
        await store.enqueue_job(new_job(f"j{i}"), clock.now())
    lease = clock.now() + timedelta(seconds=30)
    batches = await asyncio.gather(*(store.claim_jobs(EP, f"w{i}", 7, lease, clock.now()) for i in range(8)))
    ids = [c.job.id for batch in batches for c in batch]
    assert len(ids) == len(set(ids)) == 40


async def test_claim_skips_jobs_past_their_ttl(store: JobStore, clock: ManualClock) -> None:
    await store.enqueue_job(new_job("short", ttl_ms=10_000), clock.now())
    await store.enqueue_job(new_job("long"), clock.now())
    clock.advance(seconds=11)
    claimed = await store.claim_jobs(EP, "w1", 5, clock.now() + timedelta(seconds=30), clock.now())
    assert [c.job.id for c in claimed] == ["long"]
    assert await store.get_job(EP, "short", clock.now()) is None


async def test_a_finish_hands_its_waiters_the_view_a_read_would_give(
    store: JobStore, clock: ManualClock
) -> None:
    ended: dict[str, Job | None] = {}

    def changed(job_id: str, view: Job | None) -> None:
        ended[job_id] = view

    store.on_changed(changed)
    for i in range(4):
        await store.enqueue_job(new_job(f"j{i}"), clock.now())
    claimed = await store.claim_jobs(EP, "w1", 4, clock.now() + timedelta(seconds=30), clock.now())
    clock.advance(seconds=2)
    reports = [(b'{"n": 0}', None), (None, "boom"), (b'"two"', None), (None, None)]
    finishes = [
        store.finish_job(c.job.id, c.job.attempt, JobStatus.FAILED if error else JobStatus.COMPLETED,
                         output, error, clock.now())
        for c, (output, error) in zip(claimed, reports, strict=True)
    ]  # fmt: skip
    # The first alone (one job's statement), the others together (one statement for the batch).
    assert await finishes[0]
    assert await asyncio.gather(*finishes[1:]) == [True] * 3
    for i in range(4):
        read = await store.get_job(EP, f"j{i}", clock.now())
        assert read is not None and read.status.is_terminal
        assert ended[f"j{i}"] == read
    assert ended["j1"] is not None and ended["j1"].error == "boom"
    # A late report ends nothing: its waiters are only told to look again (no view; see JobEvents).
    del ended["j0"]
    assert not await store.finish_job("j0", 1, JobStatus.FAILED, None, "late", clock.now())
    assert "j0" in ended and ended["j0"] is None


async def test_finish_is_fenced_by_attempt(store: JobStore, clock: ManualClock) -> None:
    await store.enqueue_job(new_job("j1"), clock.now())
    (claimed,) = await store.claim_jobs(EP, "w1", 1, clock.now() + timedelta(seconds=30), clock.now())
    assert not await store.finish_job(
        "j1", claimed.job.attempt + 1, JobStatus.COMPLETED, b"1", None, clock.now()
    )
    clock.advance(seconds=2)
    assert await store.finish_job(
        "j1", claimed.job.attempt, JobStatus.COMPLETED, b'{"ok": 1}', None, clock.now()
    )
    # A second report of the same attempt changes nothing.
    assert not await store.finish_job("j1", claimed.job.attempt, JobStatus.FAILED, None, "late", clock.now())
    job = await store.get_job(EP, "j1", clock.now())
    assert job is not None
    assert (job.status, job.output, job.error) == (JobStatus.COMPLETED, b'{"ok": 1}', None)
    assert job.execution_ms(clock.now()) == 2000


async def test_output_bytes_are_kept_exactly(store: JobStore, clock: ManualClock) -> None:
    output = b'{"big": 123456789012345678901234567890, "f": 1.0, "z": 0, "order": [3, 1, 2]}'
    await store.enqueue_job(new_job("j1"), clock.now())
    (claimed,) = await store.claim_jobs(EP, "w1", 1, clock.now() + timedelta(seconds=30), clock.now())
    await store.finish_job("j1", claimed.job.attempt, JobStatus.COMPLETED, output, None, clock.now())
    job = await store.get_job(EP, "j1", clock.now())
    assert job is not None and job.output == output


async def test_cancel_ends_queued_and_running_jobs_but_not_ended_ones(
    store: JobStore, clock: ManualClock
) -> None:
    await store.enqueue_job(new_job("queued"), clock.now())
    await store.enqueue_job(new_job("running"), clock.now())
    await store.claim_jobs(EP, "w1", 1, clock.now() + timedelta(seconds=30), clock.now())  # takes "queued"
    cancelled = await store.cancel_job(EP, "queued", clock.now())
    assert cancelled is not None and cancelled.status is JobStatus.CANCELLED
    assert (await store.cancel_job(EP, "running", clock.now())) is not None
    assert await store.cancel_job(EP, "queued", clock.now()) is None  # already ended


async def test_purge_cancels_only_queued_jobs_and_counts_them(store: JobStore, clock: ManualClock) -> None:
    for i in range(5):
        await store.enqueue_job(new_job(f"j{i}"), clock.now())
    await store.claim_jobs(EP, "w1", 2, clock.now() + timedelta(seconds=30), clock.now())
    assert await store.purge_queue(EP, clock.now()) == 3
    counts = await store.count_jobs(EP, clock.now())
    assert (counts.in_queue, counts.in_progress, counts.cancelled) == (0, 2, 3)


async def test_retry_requeues_failed_jobs_with_output_cleared(store: JobStore, clock: ManualClock) -> None:
    await store.enqueue_job(new_job("j1"), clock.now())
    await store.claim_jobs(EP, "w1", 1, clock.now() + timedelta(seconds=30), clock.now())
    await store.finish_job("j1", 1, JobStatus.FAILED, b'{"partial": 1}', "boom", clock.now())
    retried = await store.retry_job(EP, "j1", 3, clock.now())
    assert retried is not None
    assert (retried.status, retried.retries, retried.error, retried.output) == (
        JobStatus.IN_QUEUE,
        1,
        None,
        None,
    )
    assert (await store.count_jobs(EP, clock.now())).retried == 1
    # The next attempt is numbered after the failed one, so the old attempt's reports stay fenced out.
    (again,) = await store.claim_jobs(EP, "w1", 1, clock.now() + timedelta(seconds=30), clock.now())
    assert again.job.attempt == 2
    assert not await store.finish_job("j1", 1, JobStatus.COMPLETED, b"1", None, clock.now())


async def test_retry_refuses_jobs_that_did_not_fail(store: JobStore, clock: ManualClock) -> None:
    await store.enqueue_job(new_job("j1"), clock.now())
    assert await store.retry_job(EP, "j1", 3, clock.now()) is None


async def test_results_expire_after_their_retention(store: JobStore, clock: ManualClock) -> None:
    await store.enqueue_job(new_job("j1", retention_ms=60_000), clock.now())
    await store.cancel_job(EP, "j1", clock.now())
    clock.advance(seconds=59)
    assert await store.get_job(EP, "j1", clock.now()) is not None
    clock.advance(seconds=2)
    assert await store.get_job(EP, "j1", clock.now()) is None
    assert (await store.count_jobs(EP, clock.now())).cancelled == 0


async def test_stream_reads_are_destructive_and_ordered(store: JobStore, clock: ManualClock) -> None:
    await store.enqueue_job(new_job("j1"), clock.now())
    await store.claim_jobs(EP, "w1", 1, clock.now() + timedelta(seconds=30), clock.now())
    for seq in (1, 2):
        assert await store.append_chunk("j1", 1, seq, json.dumps({"i": seq}).encode(), clock.now())
    assert await store.append_chunk("j1", 1, 2, b'"dup"', clock.now())  # a re-sent chunk is ignored
    assert not await store.append_chunk("j1", 9, 3, b"3", clock.now())  # wrong attempt
    status, chunks = await store.read_new_chunks(EP, "j1", clock.now()) or (None, [])
    assert status is JobStatus.IN_PROGRESS
    assert [(c.seq, c.output) for c in chunks] == [(1, b'{"i": 1}'), (2, b'{"i": 2}')]
    assert await store.read_new_chunks(EP, "j1", clock.now()) == (JobStatus.IN_PROGRESS, [])
    await store.append_chunk("j1", 1, 3, b"3", clock.now())
    await store.finish_job("j1", 1, JobStatus.COMPLETED, b"[]", None, clock.now())
    status, chunks = await store.read_new_chunks(EP, "j1", clock.now()) or (None, [])
    assert (status, [c.seq for c in chunks]) == (JobStatus.COMPLETED, [3])
    assert [c.seq for c in await store.chunks_since(EP, "j1", 2, clock.now())] == [2, 3]


async def test_read_of_an_unknown_job_is_none(store: JobStore, clock: ManualClock) -> None:
    assert await store.read_new_chunks(EP, "nope", clock.now()) is None
    assert await store.get_job(EP, "nope", clock.now()) is None


async def _claim(
    store: JobStore, clock: ManualClock, worker: str = "w1", n: int = 1, lease_s: int = 10
) -> list[str]:
    claimed = await store.claim_jobs(EP, worker, n, clock.now() + timedelta(seconds=lease_s), clock.now())
    return [c.job.id for c in claimed]


async def test_released_attempts_go_back_to_the_queue_until_attempts_run_out(
    store: JobStore, clock: ManualClock
) -> None:
    await store.enqueue_job(new_job("j1", max_attempts=2), clock.now())
    await _claim(store, clock)
    await store.set_progress("j1", 1, b'{"pct": 50}')
    await store.append_chunk("j1", 1, 1, b'"partial"', clock.now())
    assert await store.release_attempts([("j1", 1)], "stream lost", clock.now()) == [
        ("j1", JobStatus.IN_QUEUE)
    ]
    job = await store.get_job(EP, "j1", clock.now())
    assert job is not None and (job.status, job.worker_id, job.output) == (JobStatus.IN_QUEUE, None, None)
    assert await store.chunks_since(EP, "j1", 1, clock.now()) == []  # the next attempt starts clean
    assert await _claim(store, clock) == ["j1"]
    assert await store.release_attempts([("j1", 1)], "stale", clock.now()) == []  # attempt 1 is over
    assert await store.release_attempts([("j1", 2)], "stream lost", clock.now()) == [("j1", JobStatus.FAILED)]
    failed = await store.get_job(EP, "j1", clock.now())
    assert failed is not None and (failed.status, failed.error) == (JobStatus.FAILED, "stream lost")


async def test_expired_leases_are_rescued_and_extended_ones_are_not(
    store: JobStore, clock: ManualClock
) -> None:
    await store.enqueue_job(new_job("a"), clock.now())
    await store.enqueue_job(new_job("b"), clock.now())
    await _claim(store, clock, "w1")
    await _claim(store, clock, "w2")
    clock.advance(seconds=8)
    await store.extend_leases(["w2"], clock.now() + timedelta(seconds=10))
    clock.advance(seconds=3)
    assert await store.rescue_expired_leases(clock.now()) == [("a", JobStatus.IN_QUEUE)]
    job = await store.get_job(EP, "b", clock.now())
    assert job is not None and job.status is JobStatus.IN_PROGRESS


async def test_attempts_past_their_execution_timeout_end_timed_out(
    store: JobStore, clock: ManualClock
) -> None:
    await store.enqueue_job(new_job("slow", execution_timeout_ms=5_000), clock.now())
    await store.enqueue_job(new_job("fine"), clock.now())
    await _claim(store, clock, n=2, lease_s=3600)
    clock.advance(seconds=4)
    assert await store.time_out_jobs(clock.now()) == []
    clock.advance(seconds=2)
    assert await store.time_out_jobs(clock.now()) == ["slow"]
    job = await store.get_job(EP, "slow", clock.now())
    assert job is not None and job.status is JobStatus.TIMED_OUT and "5000 ms" in (job.error or "")
    assert await store.job_status("fine") is JobStatus.IN_PROGRESS
    # The timed-out attempt's late result changes nothing.
    assert not await store.finish_job("slow", 1, JobStatus.COMPLETED, b"1", None, clock.now())


async def test_progress_is_the_output_while_running_and_ignored_afterwards(
    store: JobStore, clock: ManualClock
) -> None:
    await store.enqueue_job(new_job("j1"), clock.now())
    await _claim(store, clock)
    assert await store.set_progress("j1", 1, b'{"pct": 10}')
    assert await store.set_progress("j1", 1, b'{"pct": 60}')
    job = await store.get_job(EP, "j1", clock.now())
    assert job is not None and job.output == b'{"pct": 60}'
    await store.finish_job("j1", 1, JobStatus.COMPLETED, b'{"done": true}', None, clock.now())
    assert not await store.set_progress("j1", 1, b'{"pct": 99}')  # a late progress post
    job = await store.get_job(EP, "j1", clock.now())
    assert job is not None and job.output == b'{"done": true}'
