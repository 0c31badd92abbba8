"""Group-committed results: many in one statement, each still fenced by its own attempt, and a batch
that loses its connection changes nothing and can be sent again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import asyncpg  # type: ignore[import-untyped,unused-ignore]
import pytest

from jobwire.server.clock import ManualClock
from jobwire.server.errors import Unavailable
from jobwire.server.model import JobStatus
from jobwire.server.service.events import JobEvents
from jobwire.server.store import JobStore, libpq_dsn
from jobwire.server.store.batch import GroupCommit
from jobwire.server.store.database import JOB_ENDED, ended_ids
from store_fixtures import EP, running


class RowLock:
    """Another session holds a job's row lock, so a statement that updates the row waits on it."""

    def __init__(self, held: Any, observer: asyncpg.Connection) -> None:
        self._held = held
        #: Looks from outside any transaction: pg_stat_activity is a snapshot for a transaction's duration.
        self.observer = observer

    async def blocked(self, query_like: str = "%") -> int:
        """The backend pid of a jobwire statement waiting on a lock, once there is one (each look is a
        round trip)."""
        while True:
            pid = await self.observer.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'jobwire' "
                "AND wait_event_type = 'Lock' AND query LIKE $1",
                query_like,
            )
            if pid is not None:
                return int(pid)

    async def release(self) -> None:
        await self._held.rollback()


@asynccontextmanager
async def row_locked(database_url: str, job_id: str) -> AsyncIterator[RowLock]:
    holder = await asyncpg.connect(libpq_dsn(database_url))
    observer = await asyncpg.connect(libpq_dsn(database_url))
    try:
        held = holder.transaction()
        await held.start()
        await holder.execute("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE", job_id)
        yield RowLock(held, observer)
    finally:
        await holder.close()
        await observer.close()


# --- the group commit itself -----------------------------------------------------------------------


class HeldWrites:
    """A write callback that records its batches and holds each until the test lets it go."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.release = asyncio.Event()
        self.entered = asyncio.Event()

    async def __call__(self, items: list[str]) -> list[str | Exception]:
        self.batches.append(items)
        self.entered.set()
        await self.release.wait()
        return [f"stored {item}" for item in items]


async def test_items_that_arrive_during_a_write_go_together_in_the_next() -> None:
    writes = HeldWrites()
    commit: GroupCommit[str, str] = GroupCommit(writes, key=lambda item: item)
    first = asyncio.create_task(commit.submit("a"))
    await writes.entered.wait()
    later = [asyncio.create_task(commit.submit(item)) for item in "bcde"]
    await asyncio.sleep(0)  # let the later submitters queue their items (no time passes)
    writes.release.set()
    assert await first == "stored a"
    assert [await t for t in later] == ["stored b", "stored c", "stored d", "stored e"]
    assert writes.batches == [["a"], ["b", "c", "d", "e"]]


async def test_items_with_the_same_key_never_share_a_write() -> None:
    writes = HeldWrites()
    writes.release.set()
    commit: GroupCommit[str, str] = GroupCommit(writes, key=lambda item: item[0])
    results = await asyncio.gather(commit.submit("x1"), commit.submit("y1"), commit.submit("x2"))
    assert list(results) == ["stored x1", "stored y1", "stored x2"]
    assert writes.batches == [["x1", "y1"], ["x2"]]


async def test_a_failed_write_fails_each_item_of_its_batch_and_the_next_one_is_tried() -> None:
    calls: list[list[int]] = []

    async def write(items: list[int]) -> list[int | Exception]:
        calls.append(items)
        if len(calls) == 1:
            raise Unavailable("down")
        return list(items)

    commit: GroupCommit[int, int] = GroupCommit(write, key=lambda item: item)
    with pytest.raises(Unavailable):
        await commit.submit(1)
    assert await commit.submit(2) == 2


# --- batched results in Postgres -------------------------------------------------------------------


async def test_many_results_land_in_one_batch(store: JobStore, clock: ManualClock) -> None:
    attempts = await running(store, clock, 50)
    stored = await asyncio.gather(
        *(
            store.finish_job(job_id, attempt, JobStatus.COMPLETED, f'"{job_id}"'.encode(), None, clock.now())
            for job_id, attempt in attempts
        )
    )
    assert stored == [True] * 50
    for job_id, _ in attempts:
        job = await store.get_job(EP, job_id, clock.now())
        assert job is not None
        assert (job.status, job.output, job.finished_at) == (
            JobStatus.COMPLETED,
            f'"{job_id}"'.encode(),
            clock.now(),
        )


async def test_a_batch_of_results_announces_its_jobs_in_few_notifications(
    store: JobStore, clock: ManualClock, database_url: str
) -> None:
    attempts = await running(store, clock, 200)
    heard: list[str] = []
    listener = await asyncpg.connect(libpq_dsn(database_url))
    got_all = asyncio.Event()

    def on_ended(_conn: object, _pid: int, _channel: str, payload: str) -> None:
        heard.append(payload)
        if sum(len(ended_ids(p)) for p in heard) >= len(attempts):
            got_all.set()

    await listener.add_listener(JOB_ENDED, on_ended)
    try:
        await asyncio.gather(
            *(
                store.finish_job(job_id, attempt, JobStatus.COMPLETED, None, None, clock.now())
                for job_id, attempt in attempts
            )
        )
        await got_all.wait()
    finally:
        await listener.close()
    # All 200 went in one statement (submitted before its writer ran): 150 ids per notification.
    assert sorted(len(ended_ids(p)) for p in heard) == [50, 150]
    assert sorted(i for p in heard for i in ended_ids(p)) == sorted(job_id for job_id, _ in attempts)


async def test_a_stale_attempt_in_a_batch_is_rejected_while_the_others_land(
    store: JobStore, clock: ManualClock
) -> None:
    (a, attempt_a), (b, attempt_b), (c, attempt_c) = await running(store, clock, 3)
    # a's first attempt is given up and a second one starts: the first's late report must not count.
    await store.release_attempts([(a, attempt_a)], "worker left", clock.now())
    (again,) = await store.claim_jobs(EP, "w2", 1, clock.now() + timedelta(seconds=30), clock.now())
    assert (again.job.id, again.job.attempt) == (a, attempt_a + 1)

    stored = await asyncio.gather(
        store.finish_job(a, attempt_a, JobStatus.COMPLETED, b"1", None, clock.now()),
        store.finish_job(b, attempt_b, JobStatus.FAILED, None, "boom", clock.now()),
        store.finish_job(c, attempt_c, JobStatus.COMPLETED, b"3", None, clock.now()),
    )
    assert list(stored) == [False, True, True]
    job_a = await store.get_job(EP, a, clock.now())
    job_b = await store.get_job(EP, b, clock.now())
    assert job_a is not None and job_b is not None
    assert (job_a.status, job_a.attempt, job_a.worker_id) == (JobStatus.IN_PROGRESS, attempt_a + 1, "w2")
    assert (job_b.status, job_b.error) == (JobStatus.FAILED, "boom")


async def test_a_batch_whose_connection_is_lost_changes_nothing_and_can_be_sent_again(
    store: JobStore, clock: ManualClock, database_url: str
) -> None:
    (a, attempt_a), (b, attempt_b) = await running(store, clock, 2)
    # Another session locks b, so the batch's UPDATE waits on it; then the batch's connection is cut.
    async with row_locked(database_url, b) as lock:
        batch = asyncio.gather(
            store.finish_job(a, attempt_a, JobStatus.COMPLETED, b"1", None, clock.now()),
            store.finish_job(b, attempt_b, JobStatus.COMPLETED, b"2", None, clock.now()),
            return_exceptions=True,
        )
        await lock.observer.execute("SELECT pg_terminate_backend($1)", await lock.blocked("%unnest%"))
        outcomes = await batch
        assert all(isinstance(o, Unavailable) for o in outcomes), outcomes
        await lock.release()

    for job_id in (a, b):
        job = await store.get_job(EP, job_id, clock.now())
        assert job is not None and job.status == JobStatus.IN_PROGRESS
    # The reports are sent again (the dispatcher retries on Unavailable) on a fresh connection.
    again = await asyncio.gather(
        store.finish_job(a, attempt_a, JobStatus.COMPLETED, b"1", None, clock.now()),
        store.finish_job(b, attempt_b, JobStatus.COMPLETED, b"2", None, clock.now()),
    )
    assert list(again) == [True, True]


async def test_a_cancelled_caller_leaves_its_item_to_be_written() -> None:
    writes = HeldWrites()
    commit: GroupCommit[str, str] = GroupCommit(writes, key=lambda item: item)
    caller = asyncio.create_task(commit.submit("a"))
    await writes.entered.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    writes.release.set()
    assert await commit.submit("b") == "stored b"
    assert writes.batches == [["a"], ["b"]]


async def test_a_store_call_cancelled_mid_statement_leaves_the_pool_usable(
    store: JobStore, clock: ManualClock, database_url: str
) -> None:
    (a, _), (b, _) = await running(store, clock, 2)
    async with row_locked(database_url, b) as lock:
        cancelling = asyncio.create_task(store.cancel_job(EP, b, clock.now()))
        await lock.blocked()
        cancelling.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelling
        await lock.release()
    # Every pooled connection still answers (the interrupted one was replaced).
    views = await asyncio.gather(*(store.get_job(EP, a, clock.now()) for _ in range(30)))
    assert all(v is not None and v.status == JobStatus.IN_PROGRESS for v in views)
    # The statement was sent: like any request cut off mid-way, it may or may not have taken effect.
    job_b = await store.get_job(EP, b, clock.now())
    assert job_b is not None and job_b.status in (JobStatus.IN_PROGRESS, JobStatus.CANCELLED)


# --- local wake-ups --------------------------------------------------------------------------------


async def test_ending_a_job_or_storing_a_chunk_wakes_this_processs_waiters_without_notify(
    store: JobStore, clock: ManualClock
) -> None:
    """No LISTEN connection here: only the store's own callback can set the event."""
    events = JobEvents()
    store.on_changed(events.on_changed)
    (streamed, attempt), (ended, ended_attempt) = await running(store, clock, 2)
    with events.watch(EP, streamed) as chunked, events.watch(EP, ended) as finished:
        assert await store.append_chunk(streamed, attempt, None, b'"part"', clock.now())
        assert chunked.is_set() and not finished.is_set()
        assert await store.finish_job(ended, ended_attempt, JobStatus.COMPLETED, b"1", None, clock.now())
        assert finished.is_set()
    with events.watch(EP, ended) as stale:  # a report the store refuses changes nothing
        assert not await store.finish_job(ended, ended_attempt, JobStatus.FAILED, None, "late", clock.now())
        # Its waiters still look again, with no view: a NOTIFY of another end may have been held back.
        assert stale.is_set() and events.take_ended(stale) is None


async def test_the_notify_of_an_end_this_process_is_storing_wakes_nobody_before_the_view_is_there(
    store: JobStore, clock: ManualClock, database_url: str
) -> None:
    """The NOTIFY and the local wake-up race; a waiter the NOTIFY woke first would read the job for a
    view that was on the way. While the FINISH waits on a lock, the job is ending here: its NOTIFY (here
    sent by hand, as the statement's own would be at its commit) wakes nobody; the store's wake does."""
    events = JobEvents(ending_here=store.ending_here)
    store.on_changed(events.on_changed)
    ((job_id, attempt),) = await running(store, clock, 1)
    async with row_locked(database_url, job_id) as lock:
        with events.watch(EP, job_id) as waiter:
            finishing = asyncio.create_task(
                store.finish_job(job_id, attempt, JobStatus.COMPLETED, b"1", None, clock.now())
            )
            await lock.blocked()
            assert store.ending_here(job_id)
            events.on_notify(JOB_ENDED, job_id)
            assert not waiter.is_set()
            await lock.release()
            assert await finishing
            assert not store.ending_here(job_id)
            assert waiter.is_set()
            ended = events.take_ended(waiter)
            assert ended is not None and ended.status == JobStatus.COMPLETED
