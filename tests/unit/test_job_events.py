"""Which waiters a notification wakes."""

from __future__ import annotations

from datetime import UTC, datetime

from jobwire.server.model import Job, JobStatus
from jobwire.server.service.events import JobEvents
from jobwire.server.store.database import JOB_CHUNKS, JOB_ENDED, QUEUE_PURGED

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_one_ended_notification_wakes_the_waiters_of_every_job_it_names() -> None:
    events = JobEvents()
    with events.watch("ep", "a") as a, events.watch("ep", "b") as b, events.watch("ep", "c") as c:
        events.on_notify(JOB_ENDED, "a b")
        assert (a.is_set(), b.is_set(), c.is_set()) == (True, True, False)


def test_an_ended_notification_skips_the_jobs_whose_end_this_process_is_storing() -> None:
    events = JobEvents(ending_here=lambda job_id: job_id == "a")
    with events.watch("ep", "a") as a, events.watch("ep", "b") as b:
        events.on_notify(JOB_ENDED, "a b")
        assert (a.is_set(), b.is_set()) == (False, True)
        events.on_changed("a", None)  # the store's own wake-up, once the statement returned
        assert a.is_set()


def test_chunks_wake_their_job_and_a_purge_its_endpoint() -> None:
    events = JobEvents()
    with events.watch("ep", "a") as a, events.watch("other", "b") as b:
        events.on_notify(JOB_CHUNKS, "a")
        assert (a.is_set(), b.is_set()) == (True, False)
        events.on_notify(QUEUE_PURGED, "other")
        assert b.is_set()


def test_an_end_seen_here_is_handed_to_the_watchers_of_that_moment_once() -> None:
    events = JobEvents()
    final = Job("a", "ep", JobStatus.COMPLETED, 1, 0, NOW, NOW, NOW, "w1", None, b"1")
    with events.watch("ep", "a") as early:
        events.on_changed("a", None)  # a chunk: a wake-up, no view
        assert early.is_set() and events.take_ended(early) is None
        events.on_changed("a", final)
        with events.watch("ep", "a") as late:  # came after the end: it reads the job itself
            assert events.take_ended(early) == final
            assert events.take_ended(early) is None  # taken once
            assert events.take_ended(late) is None
    with events.watch("ep", "a") as again:
        assert events.take_ended(again) is None  # nothing left behind by the earlier watchers
