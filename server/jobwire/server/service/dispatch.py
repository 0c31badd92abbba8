"""Push dispatch: hands queued jobs to connected workers with free slots, keeps their leases alive, and
tells them when a job they run has ended without them (cancelled, timed out).

Every replica dispatches for the workers connected to it, claiming straight from Postgres (`FOR UPDATE
SKIP LOCKED`), so replicas never need to route assignments to each other. What crosses replicas goes
through NOTIFY: "an endpoint has queued jobs" wakes every replica's dispatcher, and "a job ended" lets the
replica that holds the job's worker push the stop.

A session is one connected worker: a gRPC stream, or a Runpod worker polling over HTTP. The session
owns how messages reach the worker (`send`); the dispatcher owns credits, claims and leases.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import TypeVar

from jobwire.server.clock import Clock
from jobwire.server.errors import Unavailable
from jobwire.server.model import JobStatus
from jobwire.server.observability import DispatchObserver, Metrics, Tracing, log_context
from jobwire.server.observability.logs import replace_context
from jobwire.server.store import ClaimedJob, JobStore, WorkerPresence, WorkerRow, WorkerStore
from jobwire.server.store.database import JOB_ENDED, JOB_QUEUED, ended_ids
from jobwire.server.store.jobs import Reservation

log = logging.getLogger("jobwire.dispatch")
T = TypeVar("T")


#: The most jobs a worker may hold waiting per slot. A worker asks for that many only while its handlers
#: are far faster than a dispatch round trip (see the worker SDK's prefetch), so what it holds is a few
#: milliseconds of work. In a 20,000-job drain of no-op jobs (2 workers x 10 slots), one per slot
#: drained 6,282-6,600 jobs/s, two 6,279-6,700, three 7,756-8,389 and five 7,442-8,071: at three, the
#: claims carry about 31 jobs each instead of 16, which amortises their round trip.
MAX_PREFETCH_PER_SLOT = 3


@dataclass(frozen=True)
class DispatchSettings:
    heartbeat_interval_ms: int = 2_000
    #: A worker silent this long is dropped and its jobs requeued; a job's lease lasts this long past the
    #: last tick of its replica, so a dead replica's jobs are requeued by the others within about this.
    lease_ms: int = 8_000
    #: How often an endpoint with idle workers looks at the queue when no notification came.
    poll_interval_s: float = 1.0
    #: How often execution timeouts and expired leases are swept.
    sweep_interval_s: float = 1.0
    max_chunk_bytes: int = 1024 * 1024
    max_message_bytes: int = 32 * 1024 * 1024


@dataclass(frozen=True)
class AssignJob:
    claimed: ClaimedJob


@dataclass(frozen=True)
class StopJob:
    job_id: str
    attempt: int
    #: CANCELLED or TIMED_OUT (or FAILED, COMPLETED: the job ended some other way).
    reason: JobStatus


@dataclass(frozen=True)
class CloseSession:
    """The server drops the session (the worker went silent)."""

    reason: str


Outbound = AssignJob | StopJob | CloseSession


@dataclass(eq=False)
class WorkerSession:
    worker_id: str
    endpoint: str
    slots: int
    kind: str
    send: Callable[[Outbound], None]
    sdk_version: str = ""
    accelerators: str = "[]"
    session_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    credits: int = 0
    #: Of the credits, those taken by a claim in flight or held for a job being submitted.
    reserved: int = 0
    draining: bool = False
    closed: bool = False
    #: job id -> attempt, for the attempts this worker runs.
    in_flight: dict[str, int] = field(default_factory=dict)
    #: Jobs whose result this session is storing right now (their JOB_ENDED is not a stop).
    reporting: set[str] = field(default_factory=set)
    last_seen: datetime | None = None
    #: Requests of this worker held open right now (Runpod HTTP workers long-poll); such a worker is alive.
    open_polls: int = 0
    #: How long this worker may stay silent; None: the dispatcher's lease.
    silence_ms: int | None = None
    #: Jobs beyond `slots` the worker may hold waiting for a free slot (it asks for them with credits).
    prefetch: int = 0

    def __post_init__(self) -> None:
        self.credits = self.slots
        # What one worker can keep from the others stays bounded (MAX_PREFETCH_PER_SLOT says why 3).
        self.prefetch = max(0, min(self.prefetch, MAX_PREFETCH_PER_SLOT * self.slots))

    @property
    def capacity(self) -> int:
        """The most attempts this worker holds at once: running, and prefetched."""
        return self.slots + self.prefetch


def split_json_string(raw: bytes, limit: int) -> list[bytes]:
    """A JSON string longer than `limit` bytes as several JSON strings of at most `limit` bytes (Runpod:
    "larger outputs will be split across multiple chunks"); any other document as it is."""
    if len(raw) <= limit or not raw.startswith(b'"'):
        return [raw]
    text = json.loads(raw)
    if not isinstance(text, str):
        return [raw]
    pieces: list[bytes] = []
    current: list[str] = []
    size = 2  # the quotes
    for char in text:
        encoded = json.dumps(char, ensure_ascii=False)[1:-1]
        width = len(encoded.encode())
        if size + width > limit and current:
            pieces.append(json.dumps("".join(current), ensure_ascii=False).encode())
            current, size = [], 2
        current.append(char)
        size += width
    pieces.append(json.dumps("".join(current), ensure_ascii=False).encode())
    return pieces


class Dispatcher:
    def __init__(
        self,
        jobs: JobStore,
        workers: WorkerStore,
        clock: Clock,
        settings: DispatchSettings | None = None,
        observer: DispatchObserver | None = None,
    ) -> None:
        self._jobs = jobs
        self._workers = workers
        self._clock = clock
        self.settings = settings or DispatchSettings()
        self._by_endpoint: dict[str, deque[WorkerSession]] = {}
        self._wake: dict[str, asyncio.Event] = {}
        # Endpoints whose last claim found the queue empty, with no job queued since: a freed slot there
        # does not claim (at light load, every job's credit would otherwise cost an empty claim). Every
        # way into the queue sends JOB_QUEUED (`queued`), and the poll looks again regardless: the one
        # case it covers is a claim that skipped rows locked by another replica's claim, which then
        # failed and left them queued without a notification.
        self._empty: set[str] = set()
        #: Per endpoint, how many times jobs were queued: a claim that raced with one does not mark it empty.
        self._queued_count: dict[str, int] = {}
        self._loops: dict[str, asyncio.Task[None]] = {}
        self._holding: dict[str, WorkerSession] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._background: list[asyncio.Task[None]] = []
        self._sweeps = 0
        # Observability (issue 6): metrics and spans at claim -> assign, result and requeue; no decisions.
        self._observe = observer or DispatchObserver(Metrics(process_metrics=False), Tracing())
        # A job queued by this process wakes its endpoint at once, without the NOTIFY round trip; and
        # while a local worker is idle, a job submitted here starts on it as it is inserted.
        jobs.on_queued(self.queued)
        jobs.on_enqueue(self._reserve)

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        self._background = [
            asyncio.create_task(
                self._every(self.settings.heartbeat_interval_ms / 1000, self._tick), name="leases"
            ),
            asyncio.create_task(self._every(self.settings.sweep_interval_s, self._sweep), name="sweeper"),
        ]

    async def stop(self) -> None:
        for task in [*self._background, *self._loops.values(), *self._tasks]:
            task.cancel()
        for task in [*self._background, *self._loops.values(), *self._tasks]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._jobs.close()

    @property
    def sessions(self) -> list[WorkerSession]:
        return [s for sessions in self._by_endpoint.values() for s in sessions]

    # --- sessions ----------------------------------------------------------------------------------

    async def attach(self, session: WorkerSession) -> None:
        session.last_seen = self._clock.now()
        row = WorkerRow(
            session.worker_id, session.endpoint, session.session_id, session.kind, session.slots,
            session.sdk_version, session.accelerators,
        )  # fmt: skip
        await self._workers.register(row, self._clock.now())
        self._by_endpoint.setdefault(session.endpoint, deque()).append(session)
        if session.endpoint not in self._loops:
            self._wake[session.endpoint] = asyncio.Event()
            self._loops[session.endpoint] = asyncio.create_task(
                self._endpoint_loop(session.endpoint), name=f"dispatch-{session.endpoint}"
            )
        self.wake(session.endpoint)

    async def detach(self, session: WorkerSession, reason: str = "the worker disconnected") -> None:
        """Forgets the session and gives its running attempts back to the queue (or fails them)."""
        if session.closed:
            return
        session.closed = True
        sessions = self._by_endpoint.get(session.endpoint)
        if sessions is not None and session in sessions:
            sessions.remove(session)
        await self._release(session, list(session.in_flight.items()), reason)
        try:
            await self._workers.remove(session.worker_id, session.session_id)
        except Unavailable:
            log.warning("could not remove worker %s; its row ages out of the counts", session.worker_id)

    async def _release(self, session: WorkerSession, attempts: list[tuple[str, int]], reason: str) -> None:
        """Takes the attempts from the session and gives them back to the queue (or fails them)."""
        for job_id, _ in attempts:
            session.in_flight.pop(job_id, None)
            self._holding.pop(job_id, None)
        self._observe.forget(job_id for job_id, _ in attempts)
        try:
            released = await self._retrying(
                lambda: self._jobs.release_attempts(attempts, reason, self._clock.now())
            )
        except Unavailable:
            log.warning(
                "could not release the jobs of worker %s; their leases will expire", session.worker_id
            )
            return
        self._observe.released("worker_left", released)
        if released:
            with log_context(endpoint=session.endpoint, worker_id=session.worker_id):
                log.info("worker %s left; released %s", session.worker_id, released)

    def heard_from(self, session: WorkerSession) -> None:
        session.last_seen = self._clock.now()

    def add_credit(self, session: WorkerSession, slots: int) -> None:
        session.credits = min(session.capacity, session.credits + slots)
        self.wake(session.endpoint)

    def set_draining(self, session: WorkerSession) -> None:
        session.draining = True

    # --- reports -----------------------------------------------------------------------------------

    async def report_result(
        self, session: WorkerSession, job_id: str, attempt: int, output: bytes | None, error: str | None
    ) -> bool:
        """Ends the attempt; False when it was no longer the job's running attempt (a late report)."""
        status = JobStatus.FAILED if error is not None else JobStatus.COMPLETED
        session.reporting.add(job_id)
        try:
            with log_context(endpoint=session.endpoint, worker_id=session.worker_id, job_id=job_id):
                stored = await self._retrying(
                    lambda: self._jobs.finish_job(job_id, attempt, status, output, error, self._clock.now())
                )
        finally:
            session.reporting.discard(job_id)
        self._observe.result_stored(job_id, attempt, status, stored, session.worker_id, self._clock.now())
        if session.in_flight.get(job_id) == attempt:
            del session.in_flight[job_id]
            self._holding.pop(job_id, None)
        return stored

    async def report_progress(self, job_id: str, attempt: int, output: bytes) -> bool:
        return await self._retrying(lambda: self._jobs.set_progress(job_id, attempt, output))

    async def report_chunk(self, job_id: str, attempt: int, seq: int | None, output: bytes) -> bool:
        """Stores one chunk. Workers that number their chunks (the jobwire SDK) split them themselves;
        for the others (`seq` None: Runpod's HTTP workers) a JSON string over the chunk limit is split
        here and numbered after the attempt's last stored chunk."""
        now = self._clock.now()
        if seq is not None:
            return await self._retrying(lambda: self._jobs.append_chunk(job_id, attempt, seq, output, now))
        stored = True
        for piece in split_json_string(output, self.settings.max_chunk_bytes):
            stored = await self._retrying(partial(self._jobs.append_chunk, job_id, attempt, None, piece, now))
        return stored

    async def _retrying(self, call: Callable[[], Awaitable[T]], attempts: int = 6) -> T:
        """Store calls of a worker's report ride out a short database outage instead of losing the report."""
        delay = 0.1
        for _ in range(attempts - 1):
            try:
                return await call()
            except Unavailable:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        return await call()

    # --- notifications -----------------------------------------------------------------------------

    def wake(self, endpoint: str) -> None:
        """A slot freed (or a worker came): fill it, if the queue may hold jobs."""
        event = self._wake.get(endpoint)
        if event is not None:
            event.set()

    def queued(self, endpoint: str) -> None:
        """Jobs were queued at the endpoint (here, or on another replica: NOTIFY)."""
        self._queued_count[endpoint] = self._queued_count.get(endpoint, 0) + 1
        self._empty.discard(endpoint)
        self.wake(endpoint)

    def on_notify(self, channel: str, payload: str) -> None:
        if channel == JOB_QUEUED:
            self.queued(payload)
        elif channel == JOB_ENDED:
            for job_id in ended_ids(payload):
                session = self._holding.get(job_id)
                if session is not None and job_id not in session.reporting:
                    self._spawn(self._stop_job(session, job_id))

    def on_gap(self) -> None:
        for endpoint in list(self._wake):
            self.queued(endpoint)  # notifications may have been lost: the queue may hold jobs

    async def _stop_job(self, session: WorkerSession, job_id: str) -> None:
        status = await self._jobs.job_status(job_id)
        attempt = session.in_flight.get(job_id)
        if attempt is None or (status is not None and not status.is_terminal):
            return
        # The job no longer needs this attempt. The slot comes back when the worker says so (Credit).
        del session.in_flight[job_id]
        self._observe.forget((job_id,))
        self._holding.pop(job_id, None)
        session.send(StopJob(job_id, attempt, status or JobStatus.CANCELLED))

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- dispatch ----------------------------------------------------------------------------------

    async def _endpoint_loop(self, endpoint: str) -> None:
        # This task's log records name its endpoint (and not the ids of the RPC that happened to start it).
        replace_context(endpoint=endpoint)
        wake = self._wake[endpoint]
        while True:
            try:
                await asyncio.wait_for(wake.wait(), self.settings.poll_interval_s)
            except TimeoutError:
                self._empty.discard(endpoint)  # the poll: look at the queue whatever the hint says
            wake.clear()
            try:
                await self._dispatch(endpoint)
            except Unavailable:
                log.warning("cannot claim jobs for %s: the database is unavailable", endpoint)
            except Exception:
                log.exception("dispatch for %s failed", endpoint)

    async def _dispatch(self, endpoint: str) -> None:
        """Fills free slots, one claim per worker, rotating so that load spreads over workers."""
        if endpoint in self._empty:
            return
        queued_before = self._queued_count.get(endpoint, 0)
        sessions = self._by_endpoint.get(endpoint, deque())
        for _ in range(len(sessions)):
            if not sessions:
                return
            session = sessions[0]
            sessions.rotate(-1)
            wanted = session.credits - session.reserved
            if session.closed or session.draining or wanted <= 0:
                continue
            now = self._clock.now()
            lease_until = now + timedelta(milliseconds=self.settings.lease_ms)
            claim_started = self._observe.claim_started()
            # The slots are held while the claim runs, so a submission meanwhile cannot reserve them too.
            session.reserved += wanted
            try:
                claimed = await self._jobs.claim_jobs(endpoint, session.worker_id, wanted, lease_until, now)
            finally:
                session.reserved -= wanted
            self._observe.claimed(endpoint, len(claimed))
            self._hand_over(session, claimed, claim_started)
            if len(claimed) < wanted:
                if self._queued_count.get(endpoint, 0) == queued_before:
                    self._empty.add(endpoint)
                return  # the queue is empty

    def _reserve(self, endpoint: str, now: datetime) -> Reservation | None:
        """A free slot of a local worker of the endpoint, for a job being submitted (see
        `JobStore.on_enqueue`); None when every worker here is busy.

        The first worker with any credit, prefetch included, on purpose: jobs kept on one worker come
        back in bigger result batches. Measured with the benchmark's steady case (2 workers x 10 slots,
        no-op jobs, 3 interleaved pairs each), spreading submissions in turn cost 6-18 % and preferring
        another worker's idle slot to this one's prefetch 14-24 %. Prefetch engages only for jobs
        shorter than about a round trip, so a prefetched job's wait is short."""
        for session in self._by_endpoint.get(endpoint, ()):
            if not session.closed and not session.draining and session.credits > session.reserved:
                session.reserved += 1
                claim_started = self._observe.claim_started()
                return Reservation(
                    worker_id=session.worker_id,
                    lease_until=now + timedelta(milliseconds=self.settings.lease_ms),
                    deliver=partial(self._deliver_reserved, session, claim_started),
                    release=partial(self._unreserve, session),
                )
        return None

    def _deliver_reserved(
        self, session: WorkerSession, claim_started: int | None, claimed: ClaimedJob
    ) -> None:
        session.reserved -= 1
        self._hand_over(session, [claimed], claim_started)

    def _unreserve(self, session: WorkerSession) -> None:
        session.reserved -= 1
        self.queued(session.endpoint)  # the job was queued instead: the slot may claim it

    def _hand_over(
        self, session: WorkerSession, claimed: list[ClaimedJob], claim_started: int | None = None
    ) -> None:
        if session.closed:
            # The worker left while the claim ran: give the jobs straight back instead of sending them.
            attempts = [(c.job.id, c.job.attempt) for c in claimed]
            self._spawn(self._release(session, attempts, "the worker disconnected"))
            return
        for job in claimed:
            session.credits -= 1
            session.in_flight[job.job.id] = job.job.attempt
            self._holding[job.job.id] = session
            session.send(AssignJob(job))
            self._observe.assigned(job.job, session.worker_id, claim_started)

    # --- periodic work -----------------------------------------------------------------------------

    async def _every(self, seconds: float, work: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await work()
            except Unavailable:
                log.warning("%s skipped: the database is unavailable", work.__name__)
            except Exception:
                log.exception("%s failed", work.__name__)

    async def _tick(self) -> None:
        """Drops silent workers, extends the leases of the live ones, and records presence: one statement
        each for all the workers of this replica."""
        now = self._clock.now()
        for session in self.sessions:
            silent_before = now - timedelta(milliseconds=session.silence_ms or self.settings.lease_ms)
            if (
                session.open_polls == 0
                and session.last_seen is not None
                and session.last_seen < silent_before
            ):
                session.send(CloseSession("no heartbeat"))
                await self.detach(session, "the worker stopped sending heartbeats")
        live = self.sessions
        now = self._clock.now()
        busy = sorted({s.worker_id for s in live if s.in_flight})
        await self._jobs.extend_leases(busy, now + timedelta(milliseconds=self.settings.lease_ms))
        presences = [WorkerPresence(s.worker_id, s.session_id, len(s.in_flight), s.draining) for s in live]
        await self._workers.touch(presences, now)

    async def _sweep(self) -> None:
        now = self._clock.now()
        timed_out = await self._jobs.time_out_jobs(now)
        rescued = await self._jobs.rescue_expired_leases(now)
        self._observe.forget(timed_out)
        self._observe.released("lease_expired", rescued)
        if timed_out or rescued:
            log.info("timed out %s; rescued %s", timed_out, rescued)
        self._sweeps += 1
        if self._sweeps % 60 == 0:
            await self._workers.prune(now - timedelta(minutes=5))
