"""The job lifecycle as clients see it: submit, read, wait, cancel, retry, purge, health and stream."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from jobwire.server.clock import Clock
from jobwire.server.errors import InvalidArgument, InvalidState, NotFound, PayloadTooLarge
from jobwire.server.model import Chunk, Endpoint, Job, JobCounts, JobStatus, JobSummary, NewJob, Priority
from jobwire.server.service.events import JobEvents
from jobwire.server.store import JobStore, WorkerCounts, WorkerStore
from jobwire.server.store.listings import FIRST_PAGE, ListingStore

SECOND = 1000
MINUTE = 60 * SECOND
DAY = 24 * 60 * MINUTE


@dataclass(frozen=True)
class JobSettings:
    """Bounds and defaults (milliseconds), after Runpod's documented values."""

    default_ttl_ms: int = DAY
    ttl_range_ms: tuple[int, int] = (10 * SECOND, 7 * DAY)
    execution_timeout_range_ms: tuple[int, int] = (5 * SECOND, 7 * DAY)
    default_wait_ms: int = 90 * SECOND
    wait_range_ms: tuple[int, int] = (SECOND, 5 * MINUTE)
    #: How long a Runpod /stream read holds when no chunk is ready (the JS SDK polls with no delay).
    default_stream_hold_ms: int = 3 * SECOND
    max_stream_hold_ms: int = 90 * SECOND
    #: How often a waiter re-reads the store when no notification came (notifications are hints).
    fallback_poll_s: float = 5.0
    #: A worker not heard of for this long counts as unhealthy in /health.
    worker_stale_ms: int = 10 * SECOND
    #: Jobs per `/requests` page.
    default_page_size: int = 50
    max_page_size: int = 500


@dataclass(frozen=True)
class Submission:
    """A client's job request, as decoded by the API layer. JSON documents are bytes."""

    input: bytes
    webhook: str | None = None
    s3_config: bytes | None = None
    execution_timeout_ms: int | None = None
    low_priority: bool = False
    ttl_ms: int | None = None
    #: A repeated submit with the same key returns the first job (while it is retained).
    idempotency_key: str | None = None

    @property
    def size(self) -> int:
        return len(self.input) + len(self.s3_config or b"") + len(self.webhook or "")


def _check_range(name: str, value: int, bounds: tuple[int, int], unit: str = " milliseconds") -> int:
    low, high = bounds
    if not low <= value <= high:
        raise InvalidArgument(f"{name} must be between {low} and {high}{unit}, got {value}")
    return value


def encode_cursor(seq: int) -> str:
    """An opaque page cursor (clients must not build their own: the encoding may change)."""
    return base64.urlsafe_b64encode(f"s{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if text.startswith("s") and text[1:].isdigit():
            return int(text[1:])
    except (ValueError, UnicodeDecodeError):
        pass
    raise InvalidArgument("cursor is not a nextCursor this endpoint returned")


class JobService:
    def __init__(
        self,
        store: JobStore,
        events: JobEvents,
        clock: Clock,
        settings: JobSettings | None = None,
        workers: WorkerStore | None = None,
        listings: ListingStore | None = None,
    ) -> None:
        self._store = store
        self._workers = workers
        self._listings = listings
        self._events = events
        self._clock = clock
        self.settings = settings or JobSettings()

    async def submit(
        self, endpoint: Endpoint, submission: Submission, *, max_bytes: int, sync_wait_ms: int | None = None
    ) -> Job:
        """Queues a job. `sync_wait_ms` is set for runsync, whose result is kept for max(1 min, wait)."""
        new_job = self._new_job(endpoint, submission, max_bytes=max_bytes, sync_wait_ms=sync_wait_ms)
        return await self._store.enqueue_job(new_job, self._clock.now())

    def _new_job(
        self, endpoint: Endpoint, submission: Submission, *, max_bytes: int, sync_wait_ms: int | None
    ) -> NewJob:
        s = self.settings
        if not submission.input:
            raise InvalidArgument("input is required")
        if submission.size > max_bytes:
            raise PayloadTooLarge(f"the job is larger than {max_bytes} bytes")
        if submission.webhook is not None and urlsplit(submission.webhook).scheme not in ("http", "https"):
            raise InvalidArgument("webhook must be an http or https URL")
        timeout = endpoint.execution_timeout_ms
        if submission.execution_timeout_ms is not None:
            timeout = _check_range(
                "policy.executionTimeout", submission.execution_timeout_ms, s.execution_timeout_range_ms
            )
        ttl = s.default_ttl_ms
        if submission.ttl_ms is not None:
            ttl = _check_range("policy.ttl", submission.ttl_ms, s.ttl_range_ms)
        sync = sync_wait_ms is not None
        return NewJob(
            id=f"sync-{uuid.uuid4()}" if sync else str(uuid.uuid4()),
            endpoint=endpoint.name,
            input=submission.input,
            webhook=submission.webhook,
            s3_config=submission.s3_config,
            priority=Priority.LOW if submission.low_priority else Priority.NORMAL,
            execution_timeout_ms=timeout,
            ttl_ms=ttl,
            retention_ms=(
                max(endpoint.sync_retention_ms, sync_wait_ms or 0) if sync else endpoint.run_retention_ms
            ),
            max_attempts=endpoint.max_attempts,
            sync=sync,
            idempotency_key=submission.idempotency_key,
        )

    def wait_ms(self, requested: int | None) -> int:
        """A client's `wait`, checked against Runpod's range, or the default."""
        if requested is None:
            return self.settings.default_wait_ms
        return _check_range("wait", requested, self.settings.wait_range_ms)

    async def status(self, endpoint: Endpoint, job_id: str, ttl_ms: int | None = None) -> Job:
        """The job's view; `ttl_ms` (Runpod's `?ttl=`) first shortens how long its result is kept."""
        if ttl_ms is not None:
            await self._store.shorten_retention(endpoint.name, job_id, ttl_ms, self._clock.now())
        job = await self._store.get_job(endpoint.name, job_id, self._clock.now())
        if job is None:
            raise NotFound(f"job {job_id!r} not found")
        return job

    async def run_sync(
        self, endpoint: Endpoint, submission: Submission, *, max_bytes: int, wait_ms: int
    ) -> Job:
        """Submits a job and waits for it as `wait_for_end` does. The waiter is registered before the
        job exists, so no end can slip past it and the first look needs no read of the job."""
        new_job = self._new_job(endpoint, submission, max_bytes=max_bytes, sync_wait_ms=wait_ms)
        deadline = asyncio.get_running_loop().time() + wait_ms / 1000
        with self._events.watch(endpoint.name, new_job.id) as changed:
            job = await self._store.enqueue_job(new_job, self._clock.now())
            if job.id == new_job.id:
                return await self._until_end(endpoint, job, changed, deadline)
        # The idempotency key was used by a live job: that job is the answer.
        return await self.wait_for_end(endpoint, job.id, wait_ms)

    async def wait_for_end(self, endpoint: Endpoint, job_id: str, wait_ms: int) -> Job:
        """The job once it is terminal, or its current view when `wait_ms` passes first."""
        deadline = asyncio.get_running_loop().time() + wait_ms / 1000
        with self._events.watch(endpoint.name, job_id) as changed:
            return await self._until_end(endpoint, await self.status(endpoint, job_id), changed, deadline)

    async def _until_end(self, endpoint: Endpoint, job: Job, changed: asyncio.Event, deadline: float) -> Job:
        """Looks again at each change until the job is terminal or the deadline passed. A job this
        process ended comes with its final view (see `JobEvents.take_ended`): no read then."""
        while not job.status.is_terminal and await self._wait(changed, deadline):
            ended = self._events.take_ended(changed)
            job = ended if ended is not None else await self.status(endpoint, job.id)
        return job

    async def cancel(self, endpoint: Endpoint, job_id: str) -> Job:
        """Cancels a queued or running job; a job that already ended comes back unchanged."""
        job = await self._store.cancel_job(endpoint.name, job_id, self._clock.now())
        return job if job is not None else await self.status(endpoint, job_id)

    async def retry(self, endpoint: Endpoint, job_id: str) -> Job:
        job = await self._store.retry_job(endpoint.name, job_id, endpoint.max_attempts, self._clock.now())
        if job is not None:
            return job
        current = await self.status(endpoint, job_id)
        raise InvalidState(
            f"only FAILED or TIMED_OUT jobs can be retried; job {job_id!r} is {current.status}"
        )

    async def purge(self, endpoint: Endpoint) -> int:
        return await self._store.purge_queue(endpoint.name, self._clock.now())

    async def list_requests(
        self, endpoint: Endpoint, limit: int | None, cursor: str, statuses: frozenset[JobStatus]
    ) -> tuple[list[JobSummary], str | None]:
        """A page of the endpoint's jobs, newest first, and the cursor of the next page (None at the end)."""
        if self._listings is None:
            raise RuntimeError("this JobService has no listing store")
        page = self.settings.default_page_size if limit is None else limit
        _check_range("limit", page, (1, self.settings.max_page_size), unit="")
        before = decode_cursor(cursor) if cursor else FIRST_PAGE
        # One more than asked: whether it exists says if there is a next page, without a count query.
        rows = await self._listings.list_jobs(
            endpoint.name, self._clock.now(), limit=page + 1, before_seq=before, statuses=statuses
        )
        if len(rows) <= page:
            return rows, None
        return rows[:page], encode_cursor(rows[page - 1].seq)

    async def counts(self, endpoint: Endpoint) -> JobCounts:
        return await self._store.count_jobs(endpoint.name, self._clock.now())

    async def worker_counts(self, endpoint: Endpoint) -> WorkerCounts:
        if self._workers is None:
            return WorkerCounts()
        stale_before = self._clock.now() - timedelta(milliseconds=self.settings.worker_stale_ms)
        return await self._workers.count(endpoint.name, stale_before)

    async def read_stream(
        self, endpoint: Endpoint, job_id: str, hold_ms: int | None
    ) -> tuple[JobStatus, list[Chunk]]:
        """Runpod's destructive stream read: the chunks no earlier read returned, holding up to `hold_ms`
        while there are none and the job still runs."""
        s = self.settings
        hold = s.default_stream_hold_ms if hold_ms is None else min(hold_ms, s.max_stream_hold_ms)
        deadline = asyncio.get_running_loop().time() + hold / 1000
        with self._events.watch(endpoint.name, job_id) as changed:
            while True:
                result = await self._store.read_new_chunks(endpoint.name, job_id, self._clock.now())
                if result is None:
                    raise NotFound(f"job {job_id!r} not found")
                status, chunks = result
                if chunks or status.is_terminal or not await self._wait(changed, deadline):
                    return status, chunks

    async def follow(self, endpoint: Endpoint, job_id: str, from_seq: int) -> AsyncIterator[Chunk | Job]:
        """Every chunk from `from_seq` in order (stored ones, then live ones), then the final view."""
        next_seq = max(from_seq, 1)
        with self._events.watch(endpoint.name, job_id) as changed:
            while True:
                changed.clear()
                job = await self.status(endpoint, job_id)
                # Chunks are stored before the job ends, so once it has ended this read sees them all.
                chunks = await self._store.chunks_since(endpoint.name, job_id, next_seq, self._clock.now())
                for chunk in chunks:
                    yield chunk
                    next_seq = chunk.seq + 1
                if chunks:
                    continue
                if job.status.is_terminal:
                    yield job
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), self.settings.fallback_poll_s)

    async def _wait(self, changed: asyncio.Event, deadline: float) -> bool:
        """Waits for a change or the fallback interval; False once the deadline has passed."""
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), min(remaining, self.settings.fallback_poll_s))
        changed.clear()
        return True
