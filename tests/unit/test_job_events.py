"""Which waiters a notification wakes."""

from __future__ import annotations

from jobwire.server.service.events import JobEvents
from jobwire.server.store.database import JOB_CHUNKS, JOB_ENDED, QUEUE_PURGED


def test_one_ended_notification_wakes_the_waiters_of_every_job_it_names() -> None:
    events = JobEvents()
    with events.watch("ep", "a") as a, events.watch("ep", "b") as b, events.watch("ep", "c") as c:
        events.on_notify(JOB_ENDED, "a b")
        assert (a.is_set(), b.is_set(), c.is_set()) == (True, True, False)


def test_chunks_wake_their_job_and_a_purge_its_endpoint() -> None:
    events = JobEvents()
    with events.watch("ep", "a") as a, events.watch("other", "b") as b:
        events.on_notify(JOB_CHUNKS, "a")
        assert (a.is_set(), b.is_set()) == (True, False)
        events.on_notify(QUEUE_PURGED, "other")
        assert b.is_set()
