"""Domain types of the job service. A leaf module: it imports nothing from jobwire.

Protobuf messages never pass below `api/`; database rows never pass above `store/`. These frozen
dataclasses are what travels between the layers.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta


class JobStatus(enum.StrEnum):
    """The lifecycle of a job, with Runpod's wire names (see docs/state_machine.md)."""

    #: Waiting for a worker.
    IN_QUEUE = "IN_QUEUE"
    #: Taken by a worker; the attempt holds a lease.
    IN_PROGRESS = "IN_PROGRESS"
    #: The worker returned a result without an error.
    COMPLETED = "COMPLETED"
    #: The worker returned an error, or the job ran out of attempts.
    FAILED = "FAILED"
    #: Cancelled by a client (a queued job never runs; a running one is told to stop).
    CANCELLED = "CANCELLED"
    #: The attempt ran past its execution timeout.
    TIMED_OUT = "TIMED_OUT"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.TIMED_OUT})

#: Every allowed transition. The store guards each UPDATE with the expected current state, and
#: tests/unit/test_state_machine.py checks this table against the store exhaustively.
TRANSITIONS: frozenset[tuple[JobStatus, JobStatus]] = frozenset(
    {
        (JobStatus.IN_QUEUE, JobStatus.IN_PROGRESS),  # claimed by a worker
        (JobStatus.IN_QUEUE, JobStatus.CANCELLED),  # cancel, purge
        (JobStatus.IN_PROGRESS, JobStatus.COMPLETED),
        (JobStatus.IN_PROGRESS, JobStatus.FAILED),
        (JobStatus.IN_PROGRESS, JobStatus.CANCELLED),
        (JobStatus.IN_PROGRESS, JobStatus.TIMED_OUT),
        (JobStatus.IN_PROGRESS, JobStatus.IN_QUEUE),  # lease lost, attempts left
        (JobStatus.FAILED, JobStatus.IN_QUEUE),  # retry
        (JobStatus.TIMED_OUT, JobStatus.IN_QUEUE),  # retry
    }
)


class Role(enum.StrEnum):
    """What an API key may do."""

    #: Submit jobs and read, cancel and retry them.
    CLIENT = "client"
    #: Take jobs and report their results.
    WORKER = "worker"
    #: Everything, on every endpoint: manage endpoints and keys.
    ADMIN = "admin"


class Priority(enum.IntEnum):
    """Dispatch order: lower first, then oldest first."""

    NORMAL = 0
    LOW = 1


#: Rate-limited operations of an endpoint, as Runpod groups them (`status` also covers status-sync,
#: both stream reads and health; `cancel` also covers retry).
OPERATIONS = ("run", "runsync", "status", "cancel", "purge-queue", "requests", "openai")


@dataclass(frozen=True)
class RateLimit:
    """Requests per 10-second window for one operation of one endpoint."""

    #: The base limit.
    limit: int
    #: Added per running worker: the limit is max(limit, running_workers x per_worker), as Runpod's.
    per_worker: int = 0

    def effective(self, running_workers: int) -> int:
        return max(self.limit, running_workers * self.per_worker)


@dataclass(frozen=True)
class Endpoint:
    name: str
    created_at: datetime
    #: Default execution timeout of one attempt, in milliseconds.
    execution_timeout_ms: int
    #: Attempts before a job whose worker keeps dying is FAILED.
    max_attempts: int
    #: Signs webhook deliveries (HMAC-SHA256); never returned by the API.
    webhook_secret: str = field(default="", repr=False)
    #: How long the results of /run jobs stay readable after they end, in milliseconds.
    run_retention_ms: int = 30 * 60 * 1000
    #: The same for /runsync jobs (a longer `wait` extends it for that job).
    sync_retention_ms: int = 60 * 1000
    #: Runpod's workersMax: new jobs get 429 once the queue exceeds 50 and workers_max x 500.
    #: None: no queue-size limit.
    workers_max: int | None = None
    #: Per-operation overrides of the default rate limits (jobwire.server.service.limits).
    rate_limits: Mapping[str, RateLimit] = field(default_factory=dict)


@dataclass(frozen=True)
class ApiKey:
    id: int
    #: The first characters of the key, shown in listings; the key itself is never stored.
    prefix: str
    role: Role
    #: None for an admin key that spans every endpoint.
    endpoint: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class NewJob:
    """A job as a client submits it; JSON documents stay bytes end to end."""

    id: str
    endpoint: str
    input: bytes
    webhook: str | None
    s3_config: bytes | None
    priority: Priority
    execution_timeout_ms: int
    #: Total lifetime from submission, in milliseconds.
    ttl_ms: int
    #: How long the result stays readable once the job ends, in milliseconds.
    retention_ms: int
    #: Attempts before a job whose worker keeps dying is FAILED.
    max_attempts: int
    #: Submitted through runsync.
    sync: bool
    #: A client's Idempotency-Key: a repeated submit with it returns the first job.
    idempotency_key: str | None = None


@dataclass(frozen=True)
class Job:
    """The view of a job that the API returns."""

    id: str
    endpoint: str
    status: JobStatus
    attempt: int
    retries: int
    #: When the job last entered the queue (submit, retry, requeue).
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    worker_id: str | None
    error: str | None
    #: The output, or while IN_PROGRESS the latest progress update; None when there is none.
    output: bytes | None

    def delay_ms(self) -> int | None:
        """Milliseconds from entering the queue to the start of the current attempt."""
        if self.started_at is None:
            return None
        return _ms(self.started_at - self.queued_at)

    def execution_ms(self, now: datetime) -> int | None:
        """Milliseconds the current attempt ran: until it ended, or until `now` while it runs."""
        if self.started_at is None:
            return None
        return _ms((self.finished_at or now) - self.started_at)


@dataclass(frozen=True)
class JobSummary:
    """A job as `/requests` lists it: its view without output, and how it was submitted."""

    job: Job
    #: Position in submission order; the listing's cursor.
    seq: int
    created_at: datetime
    sync: bool
    low_priority: bool


@dataclass(frozen=True)
class JobCounts:
    in_queue: int = 0
    in_progress: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    timed_out: int = 0
    retried: int = 0


@dataclass(frozen=True)
class Chunk:
    """One numbered element of a job's streamed output."""

    seq: int
    output: bytes


def _ms(delta: timedelta) -> int:
    return max(0, int(delta.total_seconds() * 1000))
