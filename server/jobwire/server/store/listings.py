"""Listings of an endpoint's jobs (`/requests`): keyset pages in submission order, newest first."""

from __future__ import annotations

from datetime import datetime

from jobwire.server.model import JobStatus, JobSummary, Priority
from jobwire.server.store.database import Database, sql
from jobwire.server.store.jobs import ALIVE, VIEW, job_view

# Keyset pagination on the job's sequence number (ix_jobs_endpoint_seq): a page costs the same on the
# millionth job as on the first, and jobs submitted meanwhile never shift a page. Jobs whose retention
# or TTL has passed are not listed, as `/status` no longer shows them; outputs are never listed.
LIST_REQUESTS = sql(
    f"""
    SELECT {VIEW}, NULL::bytea AS output, j.seq, j.created_at, j.sync, j.priority
    FROM jobs j
    WHERE j.endpoint = :endpoint
      AND j.seq < :before
      AND (CAST(:statuses AS text[]) IS NULL OR j.status = ANY(CAST(:statuses AS text[])))
      AND {ALIVE}
    ORDER BY j.seq DESC
    LIMIT :limit
    """
)

#: Larger than any sequence number: the cursor of the first page.
FIRST_PAGE = 2**63 - 1


class ListingStore:
    def __init__(self, db: Database) -> None:
        self._db = db

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
            "statuses": [str(s) for s in sorted(statuses)] or None,
            "now": now,
            "limit": limit,
        }
        rows = await self._db.fetch(LIST_REQUESTS, params)
        return [
            JobSummary(
                job=job_view(row),
                seq=row["seq"],
                created_at=row["created_at"],
                sync=row["sync"],
                low_priority=row["priority"] == Priority.LOW,
            )
            for row in rows
        ]
