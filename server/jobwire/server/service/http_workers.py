"""Runpod's worker HTTP protocol as dispatcher sessions.

An unmodified `runpod.serverless.start(...)` worker has no stream: it long-polls job-take for work and
job-stop for cancellations, and posts results. Each worker id gets a WorkerSession whose outbox is two
queues: assignments wait there for the next take, stops for the next stop poll. The dispatcher treats it
like any stream worker: credits are what the pending take asked for, so jobs are claimed only for a
worker that is waiting for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TypeVar

from jobwire.server.errors import NotFound
from jobwire.server.model import Endpoint
from jobwire.server.service.dispatch import (
    AssignJob,
    CloseSession,
    Dispatcher,
    Outbound,
    StopJob,
    WorkerSession,
)
from jobwire.server.store import ClaimedJob, JobStore

T = TypeVar("T")

#: Runpod's worker pings every 10 s by default and may be busy in between: allow three missed pings.
HTTP_WORKER_SILENCE_MS = 30_000


@dataclass(frozen=True)
class HttpWorkerSettings:
    #: How long job-take and job-stop hold while there is nothing to hand out (the SDK gives up at 90 s).
    poll_hold_s: float = 20.0


@dataclass(eq=False)
class _Mailbox:
    session: WorkerSession
    assigned: asyncio.Queue[ClaimedJob] = field(default_factory=asyncio.Queue)
    stops: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    #: Stops sent that the worker's pings have not yet shown to be done: a stop that reaches the worker
    #: before it has started the job is ignored there, so it is sent again while pings list the job.
    unconfirmed_stops: set[str] = field(default_factory=set)

    def deliver(self, event: Outbound) -> None:
        if isinstance(event, AssignJob):
            self.assigned.put_nowait(event.claimed)
        elif isinstance(event, StopJob):
            self.unconfirmed_stops.add(event.job_id)
            self.stops.put_nowait(event.job_id)
        elif isinstance(event, CloseSession):
            self.session.closed = True


def _drain(queue: asyncio.Queue[T], limit: int) -> list[T]:
    items: list[T] = []
    while len(items) < limit and not queue.empty():
        items.append(queue.get_nowait())
    return items


class HttpWorkers:
    def __init__(
        self, dispatcher: Dispatcher, jobs: JobStore, settings: HttpWorkerSettings | None = None
    ) -> None:
        self._dispatcher = dispatcher
        self._jobs = jobs
        self.settings = settings or HttpWorkerSettings()
        self._mailboxes: dict[tuple[str, str], _Mailbox] = {}
        self._lock = asyncio.Lock()

    async def _mailbox(self, endpoint: Endpoint, worker_id: str) -> _Mailbox:
        """The worker's session, created (and attached to the dispatcher) on its first request."""
        key = (endpoint.name, worker_id)
        async with self._lock:
            mailbox = self._mailboxes.get(key)
            if mailbox is None or mailbox.session.closed:
                session = WorkerSession(
                    worker_id=worker_id,
                    endpoint=endpoint.name,
                    slots=1,
                    kind="http",
                    send=lambda event: None,
                    sdk_version="runpod",
                    silence_ms=HTTP_WORKER_SILENCE_MS,
                )
                session.credits = 0  # nothing is claimed until a take asks
                mailbox = _Mailbox(session)
                session.send = mailbox.deliver
                self._mailboxes[key] = mailbox
                await self._dispatcher.attach(session)
        self._dispatcher.heard_from(mailbox.session)
        return mailbox

    @asynccontextmanager
    async def _polling(self, mailbox: _Mailbox) -> AsyncIterator[None]:
        mailbox.session.open_polls += 1
        try:
            yield
        finally:
            mailbox.session.open_polls -= 1
            self._dispatcher.heard_from(mailbox.session)

    async def take(self, endpoint: Endpoint, worker_id: str, count: int) -> list[ClaimedJob]:
        """Up to `count` jobs for the worker, holding up to `poll_hold_s` while there are none."""
        mailbox = await self._mailbox(endpoint, worker_id)
        session = mailbox.session
        ready = _drain(mailbox.assigned, count)
        if ready:
            return ready
        async with self._polling(mailbox):
            session.slots = max(session.slots, count)
            self._dispatcher.add_credit(session, count - session.credits)
            try:
                with contextlib.suppress(TimeoutError):
                    first = await asyncio.wait_for(mailbox.assigned.get(), self.settings.poll_hold_s)
                    return [first, *_drain(mailbox.assigned, count - 1)]
                return []
            finally:
                # Claim nothing more for a worker that is no longer asking; what was claimed meanwhile
                # waits in the mailbox for its next take.
                session.credits = 0

    async def stops(self, endpoint: Endpoint, worker_id: str) -> list[str]:
        """Ids of the worker's jobs that ended without it, holding while there are none."""
        mailbox = await self._mailbox(endpoint, worker_id)
        ready = _drain(mailbox.stops, 1000)
        if not ready:
            async with self._polling(mailbox):
                with contextlib.suppress(TimeoutError):
                    first = await asyncio.wait_for(mailbox.stops.get(), self.settings.poll_hold_s)
                    ready = [first, *_drain(mailbox.stops, 1000)]
        return list(dict.fromkeys(ready))

    async def ping(self, endpoint: Endpoint, worker_id: str, running: list[str]) -> None:
        """A heartbeat listing the jobs the worker runs: stops it has not acted on are sent again."""
        mailbox = await self._mailbox(endpoint, worker_id)
        for job_id in list(mailbox.unconfirmed_stops):
            if job_id in running:
                mailbox.stops.put_nowait(job_id)  # duplicates are folded when the stops are handed out
            else:
                mailbox.unconfirmed_stops.discard(job_id)

    async def _attempt(self, endpoint: Endpoint, worker_id: str, job_id: str) -> tuple[WorkerSession, int]:
        session = (await self._mailbox(endpoint, worker_id)).session
        attempt = session.in_flight.get(job_id)
        if attempt is None:
            # Not handed out by this replica (or before a restart): the store knows what the worker runs.
            attempt = await self._jobs.running_attempt(endpoint.name, job_id, worker_id)
        if attempt is None:
            raise NotFound(f"job {job_id!r} is not running on worker {worker_id!r}")
        return session, attempt

    async def done(self, endpoint: Endpoint, worker_id: str, job_id: str, body: dict[str, object]) -> None:
        """A job-done post: a progress update when `status` is IN_PROGRESS, else the result."""
        session, attempt = await self._attempt(endpoint, worker_id, job_id)
        if body.get("status") == "IN_PROGRESS":
            await self._dispatcher.report_progress(job_id, attempt, _json(body.get("output")))
            return
        output = _json(body["output"]) if "output" in body else None
        error = body.get("error")
        if error is not None and not isinstance(error, str):
            error = json.dumps(error)  # Runpod only fails on string errors; a non-string one is kept readable
        await self._dispatcher.report_result(session, job_id, attempt, output, error or None)
        # The worker takes its next job with a new take; the dispatcher credits it then.

    async def stream(self, endpoint: Endpoint, worker_id: str, job_id: str, body: dict[str, object]) -> None:
        _, attempt = await self._attempt(endpoint, worker_id, job_id)
        await self._dispatcher.report_chunk(job_id, attempt, None, _json(body.get("output")))


def _json(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
