"""Domain types to protobuf messages and back. Nothing else in the server touches both."""

from __future__ import annotations

from datetime import datetime
from typing import TypeVar

from jobwire.server.model import Chunk, Job, JobCounts, JobStatus, JobSummary
from jobwire.server.service.jobs import Submission
from jobwire.server.store import WorkerCounts
from jobwire.v1 import job_pb2, jobs_pb2

_UINT32_MAX = 2**32 - 1


def submission(message: job_pb2.JobSubmission, idempotency_key: str | None = None) -> Submission:
    policy = message.policy
    return Submission(
        idempotency_key=idempotency_key or None,
        input=message.input,
        webhook=message.webhook or None,
        s3_config=message.s3_config or None,
        execution_timeout_ms=policy.execution_timeout if policy.HasField("execution_timeout") else None,
        low_priority=policy.low_priority,
        ttl_ms=policy.ttl if policy.HasField("ttl") else None,
    )


def status(value: JobStatus) -> job_pb2.JobStatus.ValueType:
    return job_pb2.JobStatus.Value(value.value)


def job(view: Job, now: datetime, message: job_pb2.Job | None = None) -> job_pb2.Job:
    """The job's message, written into `message` when given (a response's field): a Job built apart and
    passed to a response's constructor is copied into it, its output (up to the payload limit) with it."""
    if message is None:
        message = job_pb2.Job()
    message.id = view.id
    message.status = status(view.status)
    _timings(message, view, now)
    if view.output is not None:
        message.output = view.output
    if view.error is not None:
        message.error = view.error
    if view.retries:
        message.retries = view.retries
    if view.worker_id is not None:
        message.worker_id = view.worker_id
    return message


_Response = TypeVar(
    "_Response",
    jobs_pb2.RunResponse,
    jobs_pb2.RunSyncResponse,
    jobs_pb2.StatusResponse,
    jobs_pb2.StatusSyncResponse,
    jobs_pb2.CancelResponse,
    jobs_pb2.RetryResponse,
)


def with_job(response: _Response, view: Job, now: datetime) -> _Response:
    """`response` with the job written into its `job` field in place (see `job`)."""
    job(view, now, response.job)
    return response


def request_summary(summary: JobSummary, now: datetime) -> jobs_pb2.RequestSummary:
    view = summary.job
    message = jobs_pb2.RequestSummary(
        id=view.id,
        status=status(view.status),
        kind="runsync" if summary.sync else "run",
        retries=view.retries,
        low_priority=summary.low_priority,
    )
    message.created_at.FromDatetime(summary.created_at)
    if view.started_at is not None:
        message.started_at.FromDatetime(view.started_at)
    if view.finished_at is not None:
        message.finished_at.FromDatetime(view.finished_at)
    _timings(message, view, now)
    if view.worker_id is not None:
        message.worker_id = view.worker_id
    return message


def _timings(message: job_pb2.Job | jobs_pb2.RequestSummary, view: Job, now: datetime) -> None:
    delay = view.delay_ms()
    if delay is not None:
        message.delay_time = min(delay, _UINT32_MAX)
    execution = view.execution_ms(now)
    if execution is not None:
        message.execution_time = min(execution, _UINT32_MAX)


def health(counts: JobCounts, workers: WorkerCounts) -> jobs_pb2.HealthResponse:
    return jobs_pb2.HealthResponse(
        jobs=jobs_pb2.JobCounts(
            completed=counts.completed,
            failed=counts.failed,
            in_progress=counts.in_progress,
            in_queue=counts.in_queue,
            retried=counts.retried,
        ),
        workers=jobs_pb2.WorkerCounts(
            idle=workers.idle, ready=workers.ready, running=workers.running, unhealthy=workers.unhealthy
        ),
    )


def chunk(value: Chunk) -> jobs_pb2.Chunk:
    return jobs_pb2.Chunk(seq=value.seq, output=value.output)
