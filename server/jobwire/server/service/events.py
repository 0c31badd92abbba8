"""In-process wake-ups for callers that wait on a job (runsync, status-sync, stream readers).

Postgres NOTIFY (through the store's Listener) says "job X changed"; every waiter of X re-reads the job
from the store. A wake-up is only a hint to look again, so a spurious one costs a query and a lost one
costs at most the waiter's fallback interval. When this process ended the job itself, the wake-up comes
with the job's final view, which its waiters take instead of reading the job again.

That local wake-up and the NOTIFY of the same end race: Postgres sends the notification at the commit,
and the listener's callback often runs before the statement's caller resumes. A waiter woken by the
NOTIFY first would read the job although its view was on the way (a round trip more on every runsync).
So a NOTIFY of a job whose result this process is storing (`ending_here`) wakes nobody: the store wakes
the waiters itself once the statement has returned, with the view, or without it when its report was
refused (the end may then be another replica's, which that held-back notification announced).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from jobwire.server.model import Job
from jobwire.server.store.database import JOB_CHUNKS, JOB_ENDED, QUEUE_PURGED, ended_ids

CHANNELS = (JOB_ENDED, JOB_CHUNKS, QUEUE_PURGED)


class JobEvents:
    def __init__(self, ending_here: Callable[[str], bool] = lambda job_id: False) -> None:
        """`ending_here(job_id)`: this process is storing a result of the job (`JobStore.ending_here`)."""
        self._ending_here = ending_here
        self._by_job: defaultdict[str, set[asyncio.Event]] = defaultdict(set)
        self._by_endpoint: defaultdict[str, set[asyncio.Event]] = defaultdict(set)
        #: Per watcher: the final view of its job, which this process ended while it watched.
        self._ended: dict[asyncio.Event, Job] = {}

    @contextmanager
    def watch(self, endpoint: str, job_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever the job may have changed. Register before reading the job, so a change
        between the read and the wait is not missed."""
        event = asyncio.Event()
        self._by_job[job_id].add(event)
        self._by_endpoint[endpoint].add(event)
        try:
            yield event
        finally:
            _discard(self._by_job, job_id, event)
            _discard(self._by_endpoint, endpoint, event)
            self._ended.pop(event, None)

    def on_notify(self, channel: str, payload: str) -> None:
        if channel == QUEUE_PURGED:
            self._wake(self._by_endpoint.get(payload, ()))
        elif channel == JOB_ENDED:
            for job_id in ended_ids(payload):
                if not self._ending_here(job_id):
                    self._wake(self._by_job.get(job_id, ()))
        else:
            self._wake(self._by_job.get(payload, ()))

    def on_changed(self, job_id: str, ended: Job | None = None) -> None:
        """This process changed the job (see `JobStore.on_changed`): its waiters look again at once;
        `ended`: the job's final view, this process having just ended it."""
        events = self._by_job.get(job_id, set())
        if ended is not None:
            # Handed to the watchers of this moment only: one that comes later (after a retry, say)
            # must not take an old attempt's end for the job's.
            for event in events:
                self._ended[event] = ended
        self._wake(events)

    def take_ended(self, watcher: asyncio.Event) -> Job | None:
        """The final view of the watcher's job, if this process ended it since the watcher last looked."""
        return self._ended.pop(watcher, None)

    def on_gap(self) -> None:
        """Notifications may have been lost: every waiter looks again."""
        for events in list(self._by_job.values()):
            self._wake(events)

    @property
    def waiting(self) -> int:
        return sum(len(events) for events in self._by_job.values())

    @staticmethod
    def _wake(events: set[asyncio.Event] | tuple[()]) -> None:
        for event in list(events):
            event.set()


def _discard(index: defaultdict[str, set[asyncio.Event]], key: str, event: asyncio.Event) -> None:
    events = index.get(key)
    if events is not None:
        events.discard(event)
        if not events:
            del index[key]
