"""The two fast submission paths of the job store: submissions inserted together (with the results that
queued up beside them), and a submission that starts at once on a slot a local worker has free."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import asyncpg  # type: ignore[import-untyped,unused-ignore]

from jobwire.server.clock import ManualClock
from jobwire.server.model import JobStatus
from jobwire.server.store import ClaimedJob, JobStore, libpq_dsn
from jobwire.server.store.jobs import Reservation
from store_fixtures import EP, new_job, running


async def test_concurrent_submissions_are_all_queued_with_their_payloads(
    store: JobStore, clock: ManualClock
) -> None:
    woken: list[str] = []
    store.on_queued(woken.append)
    jobs = [
        new_job(f"job-{i}", input=f'"job-{i}"'.encode(), s3_config=b"{}" if i % 2 else None)
        for i in range(30)
    ]
    views = await asyncio.gather(*(store.enqueue_job(job, clock.now()) for job in jobs))
    assert [v.status for v in views] == [JobStatus.IN_QUEUE] * 30
    assert woken and set(woken) == {EP}

    claimed = await store.claim_jobs(EP, "w1", 100, clock.now() + timedelta(seconds=30), clock.now())
    assert sorted((c.job.id, c.input, c.s3_config) for c in claimed) == sorted(
        (j.id, j.input, j.s3_config) for j in jobs
    )


async def test_a_submission_that_fails_in_a_batch_fails_alone(store: JobStore, clock: ManualClock) -> None:
    jobs = [new_job("a"), new_job("b"), new_job("c", endpoint="no-such-endpoint"), new_job("d")]
    outcomes = await asyncio.gather(
        *(store.enqueue_job(job, clock.now()) for job in jobs), return_exceptions=True
    )
    assert isinstance(outcomes[2], asyncpg.ForeignKeyViolationError)
    assert [getattr(o, "status", None) for i, o in enumerate(outcomes) if i != 2] == [JobStatus.IN_QUEUE] * 3
    assert await store.get_job("no-such-endpoint", "c", clock.now()) is None


class Slots:
    """The dispatcher's side of a reservation, recorded: one free slot of worker w1."""

    def __init__(self, free: int = 1) -> None:
        self.free = free
        self.delivered: list[ClaimedJob] = []
        self.released = 0

    def reserve(self, endpoint: str, now: datetime) -> Reservation | None:
        if self.free == 0:
            return None
        self.free -= 1
        return Reservation("w1", now + timedelta(seconds=30), self.delivered.append, self._release)

    def _release(self) -> None:
        self.free += 1
        self.released += 1


async def test_a_submission_starts_at_once_on_a_reserved_slot(store: JobStore, clock: ManualClock) -> None:
    slots = Slots()
    store.on_enqueue(slots.reserve)
    await store.enqueue_job(new_job("now", input=b'"now"'), clock.now())
    (claimed,) = slots.delivered
    assert (claimed.job.id, claimed.job.attempt, claimed.job.worker_id, claimed.input) == (
        "now",
        1,
        "w1",
        b'"now"',
    )
    job = await store.get_job(EP, "now", clock.now())
    assert job is not None
    assert (job.status, job.attempt, job.worker_id, job.started_at) == (
        JobStatus.IN_PROGRESS,
        1,
        "w1",
        clock.now(),
    )
    # It is an attempt like any claimed one: fenced, and it ends with its result.
    assert await store.finish_job("now", 1, JobStatus.COMPLETED, b"1", None, clock.now())


async def test_a_submission_behind_waiting_jobs_is_queued_and_the_slot_given_back(
    store: JobStore, clock: ManualClock
) -> None:
    await store.enqueue_job(new_job("older"), clock.now())
    slots = Slots()
    store.on_enqueue(slots.reserve)
    await store.enqueue_job(new_job("newer"), clock.now())
    assert (slots.delivered, slots.released, slots.free) == ([], 1, 1)
    newer = await store.get_job(EP, "newer", clock.now())
    assert newer is not None and newer.status == JobStatus.IN_QUEUE
    claimed = await store.claim_jobs(EP, "w1", 2, clock.now() + timedelta(seconds=30), clock.now())
    assert [c.job.id for c in claimed] == ["older", "newer"]


async def test_submissions_made_together_are_inserted_together_and_start_on_free_slots(
    store: JobStore, clock: ManualClock
) -> None:
    slots = Slots(free=4)
    store.on_enqueue(slots.reserve)
    views = await asyncio.gather(*(store.enqueue_job(new_job(f"j{i}"), clock.now()) for i in range(3)))
    assert [v.status for v in views] == [JobStatus.IN_QUEUE] * 3  # what /run answers, as before
    # The first is written at once and the two submitted meanwhile join it or the next write; either way
    # each starts on a free slot, in submission order.
    assert [c.job.id for c in slots.delivered] == ["j0", "j1", "j2"] and slots.free == 1
    for claimed in slots.delivered:
        assert (claimed.job.attempt, claimed.job.worker_id, claimed.input) == (1, "w1", b'{"n": 1}')
    jobs = [await store.get_job(EP, f"j{i}", clock.now()) for i in range(3)]
    assert [(j.status, j.attempt, j.worker_id) for j in jobs if j is not None] == [
        (JobStatus.IN_PROGRESS, 1, "w1")
    ] * 3
    # Started by the batch, they are attempts like any claimed one: fenced, and they end with a result.
    assert await store.finish_job("j2", 1, JobStatus.COMPLETED, b"2", None, clock.now())
    assert not await store.finish_job("j1", 2, JobStatus.COMPLETED, b"1", None, clock.now())


async def test_a_batch_starts_as_many_jobs_as_slots_are_free_and_queues_the_rest(
    store: JobStore, clock: ManualClock
) -> None:
    woken: list[str] = []
    store.on_queued(woken.append)
    slots = Slots(free=2)
    store.on_enqueue(slots.reserve)
    # Two slots for four jobs submitted together: they go to the jobs of normal priority in submission
    # order (j0, j2); j3 and the low-priority j1 are queued (and the dispatcher is woken for them).
    jobs = [new_job("j0"), new_job("j1", low=True), new_job("j2"), new_job("j3")]
    await asyncio.gather(*(store.enqueue_job(job, clock.now()) for job in jobs))
    assert [c.job.id for c in slots.delivered] == ["j0", "j2"] and slots.free == 0
    assert woken == [EP, EP]
    claimed = await store.claim_jobs(EP, "w2", 10, clock.now() + timedelta(seconds=30), clock.now())
    assert [c.job.id for c in claimed] == ["j3", "j1"]


async def test_a_batch_behind_waiting_jobs_is_queued_and_gives_its_slots_back(
    store: JobStore, clock: ManualClock
) -> None:
    await store.enqueue_job(new_job("older"), clock.now())
    slots = Slots(free=3)
    store.on_enqueue(slots.reserve)
    # Each of the three finds "older" waiting, so each is queued behind it and every reserved slot is
    # given back.
    await asyncio.gather(*(store.enqueue_job(new_job(i), clock.now()) for i in ("direct", "b1", "b2")))
    assert (slots.delivered, slots.released, slots.free) == ([], 3, 3)
    claimed = await store.claim_jobs(EP, "w1", 10, clock.now() + timedelta(seconds=30), clock.now())
    assert [c.job.id for c in claimed] == ["older", "direct", "b1", "b2"]


async def test_a_keyed_submission_starts_on_a_reserved_slot_and_a_repeat_gives_its_slot_back(
    store: JobStore, clock: ManualClock
) -> None:
    slots = Slots(free=2)
    store.on_enqueue(slots.reserve)
    first = await store.enqueue_job(new_job("keyed", idempotency_key="k1"), clock.now())
    again = await store.enqueue_job(new_job("other", idempotency_key="k1"), clock.now())
    assert (first.id, again.id) == ("keyed", "keyed")
    assert [c.job.id for c in slots.delivered] == ["keyed"]
    assert (slots.released, slots.free) == (1, 1)  # the repeat's reservation went back
    job = await store.get_job(EP, "keyed", clock.now())
    assert job is not None and (job.status, job.worker_id) == (JobStatus.IN_PROGRESS, "w1")


async def writing_transactions(database_url: str, *job_ids: str) -> dict[str, str]:
    """The transaction that last wrote each job's row (its xmin): rows written by one statement share it."""
    conn = await asyncpg.connect(libpq_dsn(database_url))
    try:
        rows = await conn.fetch("SELECT id, xmin::text AS tx FROM jobs WHERE id = ANY($1::text[])", job_ids)
    finally:
        await conn.close()
    return {row["id"]: row["tx"] for row in rows}


async def test_submissions_and_results_that_queue_up_together_are_written_in_one_statement(
    store: JobStore, clock: ManualClock, database_url: str
) -> None:
    (a, attempt_a), (b, attempt_b) = await running(store, clock, 2)
    announced: list[tuple[str, JobStatus | None]] = []
    store.on_changed(lambda job_id, view: announced.append((job_id, view.status if view else None)))
    slots = Slots(free=1)
    store.on_enqueue(slots.reserve)
    # All four reach the writer before it runs, so they make one write.
    outcomes = await asyncio.gather(
        store.finish_job(a, attempt_a, JobStatus.COMPLETED, b'"a"', None, clock.now()),
        store.enqueue_job(new_job("x"), clock.now()),
        store.finish_job(b, attempt_b, JobStatus.FAILED, None, "boom", clock.now()),
        store.enqueue_job(new_job("y"), clock.now()),
    )
    assert outcomes[0] is True and outcomes[2] is True
    assert [getattr(o, "status", None) for o in outcomes[1::2]] == [JobStatus.IN_QUEUE] * 2
    transactions = await writing_transactions(database_url, a, b, "x", "y")
    assert len(transactions) == 4 and len(set(transactions.values())) == 1
    # The results ended their jobs and were announced with their views; x took the free slot, y waits.
    assert sorted(announced) == [(a, JobStatus.COMPLETED), (b, JobStatus.FAILED)]
    job_a, job_b = await store.get_job(EP, a, clock.now()), await store.get_job(EP, b, clock.now())
    assert job_a is not None and (job_a.status, job_a.output) == (JobStatus.COMPLETED, b'"a"')
    assert job_b is not None and (job_b.status, job_b.error) == (JobStatus.FAILED, "boom")
    assert [c.job.id for c in slots.delivered] == ["x"] and slots.free == 0
    claimed = await store.claim_jobs(EP, "w2", 10, clock.now() + timedelta(seconds=30), clock.now())
    assert [c.job.id for c in claimed] == ["y"]


async def test_a_submission_that_fails_in_a_shared_write_fails_alone_and_the_results_land(
    store: JobStore, clock: ManualClock
) -> None:
    ((a, attempt_a),) = await running(store, clock, 1)
    slots = Slots(free=1)
    store.on_enqueue(slots.reserve)
    outcomes = await asyncio.gather(
        store.finish_job(a, attempt_a, JobStatus.COMPLETED, b'"a"', None, clock.now()),
        store.enqueue_job(new_job("x"), clock.now()),
        store.enqueue_job(new_job("bad", endpoint="no-such-endpoint"), clock.now()),
        return_exceptions=True,
    )
    assert outcomes[0] is True
    assert getattr(outcomes[1], "status", None) == JobStatus.IN_QUEUE
    assert isinstance(outcomes[2], asyncpg.ForeignKeyViolationError)
    job_a = await store.get_job(EP, a, clock.now())
    assert job_a is not None and (job_a.status, job_a.output) == (JobStatus.COMPLETED, b'"a"')
    job_x = await store.get_job(EP, "x", clock.now())
    assert job_x is not None and job_x.status in (JobStatus.IN_QUEUE, JobStatus.IN_PROGRESS)
    assert await store.get_job("no-such-endpoint", "bad", clock.now()) is None
    # The shared write's slot was given back or used, never lost.
    assert slots.free + len(slots.delivered) == 1


async def test_a_large_result_is_not_copied_into_a_shared_write(
    store: JobStore, clock: ManualClock, database_url: str
) -> None:
    ((a, attempt_a),) = await running(store, clock, 1)
    large = b'"' + b"x" * 100_000 + b'"'
    outcomes = await asyncio.gather(
        store.finish_job(a, attempt_a, JobStatus.COMPLETED, large, None, clock.now()),
        store.enqueue_job(new_job("x"), clock.now()),
        store.enqueue_job(new_job("y"), clock.now()),
    )
    assert outcomes[0] is True
    transactions = await writing_transactions(database_url, a, "x", "y")
    # The submissions went together, the result in a statement of its own.
    assert transactions["x"] == transactions["y"] != transactions[a]
    job_a = await store.get_job(EP, a, clock.now())
    assert job_a is not None and job_a.output == large
