"""Listings of an endpoint's jobs (`/requests`): keyset pages in submission order, newest first."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from jobwire.server.model import Job, JobStatus, JobSummary, Priority
from jobwire.server.store.database import transaction

# Keyset pagination on the job's sequence number (ix_jobs_endpoint_seq): a page costs the same on the
# millionth job as on the first, and jobs submitted meanwhile never shift a page. Jobs whose retention
# or TTL has passed are not listed, as `/status` no longer shows them.
LIST_REQUESTS = text(
    """
    SELECT j.seq, j.id, j.endpoint, j.status, j.attempt, j.retries, j.queued_at, j.started_at,
           j.finished_at, j.worker_id, j.error, j.created_at, j.sync, j.priority
    FROM jobs j
    WHERE j.endpoint = :endpoint
      AND j.seq < :before
      AND (CAST(:statuses AS text[]) IS NULL OR j.status = ANY(CAST(:statuses AS text[])))
      AND j.expires_at > :now AND (j.retain_until IS NULL OR j.retain_until > :now)
    ORDER BY j.seq DESC
    LIMIT :limit
    """
)

#: Larger than any sequence number: the cursor of the first page.
FIRST_PAGE = 2**63 - 1


class ListingStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def list_jobs(
        self,
        endpoint: str,
        now: datetime,
        *,
        limit: int,
        before_seq: int = FIRST_PAGE,
        statuses: frozenset[JobStatus] = frozenset(),
    ) -> list[JobSummary]:
        """Up to `limit` jobs submitted before `before_seq`, newest first."""
        params = {
            "endpoint": endpoint,
            "before": before_seq,
            "statuses": sorted(statuses) or None,
            "now": now,
            "limit": limit,
        }
        async with transaction(self._engine) as conn:
            rows = (await conn.execute(LIST_REQUESTS, params)).all()
        return [
            JobSummary(
                job=Job(
                    id=row.id,
                    endpoint=row.endpoint,
                    status=JobStatus(row.status),
                    attempt=row.attempt,
                    retries=row.retries,
                    queued_at=row.queued_at,
                    started_at=row.started_at,
                    finished_at=row.finished_at,
                    worker_id=row.worker_id,
                    error=row.error,
                    output=None,
                ),
                seq=row.seq,
                created_at=row.created_at,
                sync=row.sync,
                low_priority=row.priority == Priority.LOW,
            )
            for row in rows
        ]
