"""What the dispatcher reports: assignments, results and requeues, as metrics and spans.

The dispatcher calls these at the points of a job's life it owns (claim -> assign, result stored, attempt
given up). For each attempt handed out by this replica it remembers when the attempt was queued and
started and the span of its dispatch, until the result comes or the attempt is given up; so the delay
and execution histograms are observed on the replica that dispatched the attempt (always the case for
stream workers; a Runpod HTTP worker posting its result to another replica is not timed).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from jobwire.server.model import Job, JobStatus
from jobwire.server.observability.metrics import Metrics
from jobwire.server.observability.tracing import Tracing


@dataclass(frozen=True)
class _Attempt:
    endpoint: str
    attempt: int
    delay_s: float
    started_at: datetime
    dispatch_span: trace.SpanContext | None


class DispatchObserver:
    """Records the dispatcher's events for one server."""

    def __init__(self, metrics: Metrics, tracing: Tracing) -> None:
        self.metrics = metrics
        self.tracing = tracing
        self._attempts: dict[str, _Attempt] = {}

    def claim_started(self) -> int | None:
        """Marks the start of a claim (the dispatch spans begin here), when tracing is on."""
        return time.time_ns() if self.tracing.enabled else None

    def claimed(self, endpoint: str, jobs: int) -> None:
        """A claim statement ran and found `jobs` jobs."""
        self.metrics.claimed(endpoint, jobs)

    def assigned(self, job: Job, worker_id: str, claim_started: int | None) -> None:
        """A claimed attempt was sent to its worker: counts it and ends its `jobwire.dispatch` span."""
        self.metrics.job_dispatched(job.endpoint)
        span_context = None
        if claim_started is not None:
            span = self.tracing.tracer.start_span(
                "jobwire.dispatch",
                kind=SpanKind.INTERNAL,
                start_time=claim_started,
                attributes={
                    "jobwire.job_id": job.id,
                    "jobwire.endpoint": job.endpoint,
                    "jobwire.worker_id": worker_id,
                    "jobwire.attempt": job.attempt,
                },
            )
            span_context = span.get_span_context()
            span.end()
        delay = job.delay_ms()
        self._attempts[job.id] = _Attempt(
            job.endpoint,
            job.attempt,
            (delay or 0) / 1000,
            job.started_at or job.queued_at,
            span_context,
        )

    def result_stored(
        self, job_id: str, attempt: int, status: JobStatus, stored: bool, worker_id: str, now: datetime
    ) -> None:
        """A worker reported the attempt's result; `stored` False: it was late (the job had moved on)."""
        known = self._attempts.get(job_id)
        if known is not None and known.attempt == attempt:
            del self._attempts[job_id]
        else:
            known = None
        if stored and known is not None:
            execution_s = max(0.0, (now - known.started_at).total_seconds())
            self.metrics.result_stored(known.endpoint, str(status), known.delay_s, execution_s)
        if self.tracing.enabled:
            self._result_span(job_id, attempt, status, stored, worker_id, known)

    def _result_span(
        self,
        job_id: str,
        attempt: int,
        status: JobStatus,
        stored: bool,
        worker_id: str,
        known: _Attempt | None,
    ) -> None:
        links = [Link(known.dispatch_span)] if known is not None and known.dispatch_span is not None else []
        attributes: dict[str, str | int | bool] = {
            "jobwire.job_id": job_id,
            "jobwire.attempt": attempt,
            "jobwire.status": str(status),
            "jobwire.worker_id": worker_id,
            "jobwire.result_stored": stored,
        }
        if known is not None:
            attributes["jobwire.endpoint"] = known.endpoint
        span = self.tracing.tracer.start_span(
            "jobwire.result", kind=SpanKind.INTERNAL, attributes=attributes, links=links
        )
        if status == JobStatus.FAILED:
            span.set_status(Status(StatusCode.ERROR, "the handler failed"))
        span.end()

    def released(self, reason: str, outcomes: Iterable[tuple[str, JobStatus]]) -> None:
        """Running attempts were given up (`reason`: `worker_left`, `lease_expired`): each was requeued
        or, out of attempts, FAILED."""
        requeued = failed = 0
        for job_id, status in outcomes:
            self._attempts.pop(job_id, None)
            if status == JobStatus.IN_QUEUE:
                requeued += 1
            else:
                failed += 1
        self.metrics.requeued(reason, "requeued", requeued)
        self.metrics.requeued(reason, "failed", failed)

    def forget(self, job_ids: Iterable[str]) -> None:
        """These attempts ended without a result from this replica's worker (cancelled, timed out)."""
        for job_id in job_ids:
            self._attempts.pop(job_id, None)

    @property
    def tracked(self) -> int:
        """Attempts remembered now (a test checks that nothing is kept after jobs end)."""
        return len(self._attempts)
