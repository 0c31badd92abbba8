"""Every SQL statement on the webhook outbox, and the pruning of expired jobs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text

from jobwire.server.model import Job, JobStatus
from jobwire.server.store.database import Database

# Claims due deliveries for one sender: pushes their next attempt past the lease, so a sender on another
# replica does not send them too, and returns what the body needs.
CLAIM = text(
    """
    WITH due AS (
        SELECT id FROM webhook_deliveries
        WHERE delivered_at IS NULL AND failed_at IS NULL AND next_attempt_at <= :now
        ORDER BY next_attempt_at LIMIT :limit FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE webhook_deliveries d
        SET next_attempt_at = :lease_until, attempts = d.attempts + 1, last_error = NULL
        FROM due WHERE d.id = due.id
        RETURNING d.id, d.job_seq, d.url, d.attempts
    )
    SELECT c.id AS delivery_id, c.url, c.attempts, e.webhook_secret,
           j.id, j.endpoint, j.status, j.attempt, j.retries, j.queued_at, j.started_at, j.finished_at,
           j.worker_id, j.error, COALESCE(j.output, o.data) AS output, COALESCE(j.input, i.data) AS input
    FROM claimed c
    JOIN jobs j ON j.seq = c.job_seq
    JOIN endpoints e ON e.name = j.endpoint
    LEFT JOIN job_payloads i ON i.job_seq = j.seq AND i.kind = 'input'
    LEFT JOIN job_payloads o ON o.job_seq = j.seq AND o.kind = 'output'
    ORDER BY c.id
    """
)

DELIVERED = text("UPDATE webhook_deliveries SET delivered_at = :now, last_error = NULL WHERE id = :id")
RETRY = text("UPDATE webhook_deliveries SET next_attempt_at = :at, last_error = :error WHERE id = :id")
GIVE_UP = text("UPDATE webhook_deliveries SET failed_at = :now, last_error = :error WHERE id = :id")

STATES = text(
    """
    SELECT d.attempts, d.next_attempt_at, d.delivered_at, d.failed_at, d.last_error
    FROM webhook_deliveries d JOIN jobs j ON j.seq = d.job_seq
    WHERE j.endpoint = :endpoint AND j.id = :id ORDER BY d.id
    """
)

# Jobs whose result retention or TTL has passed, a batch at a time (payloads, chunks and deliveries go
# with them by ON DELETE CASCADE).
PRUNE = text(
    """
    WITH gone AS (
        SELECT seq FROM jobs
        WHERE retain_until < :now OR expires_at < :now
        LIMIT :limit FOR UPDATE SKIP LOCKED
    )
    DELETE FROM jobs j USING gone WHERE j.seq = gone.seq
    """
)


@dataclass(frozen=True)
class Delivery:
    id: int
    url: str
    #: This attempt's number, from 1.
    attempt: int
    secret: str
    job: Job
    input: bytes | None


@dataclass(frozen=True)
class DeliveryState:
    attempts: int
    next_attempt_at: datetime
    delivered_at: datetime | None
    failed_at: datetime | None
    last_error: str | None


class WebhookStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def claim(self, now: datetime, lease_until: datetime, limit: int = 50) -> list[Delivery]:
        params = {"now": now, "lease_until": lease_until, "limit": limit}
        async with self._db.transaction() as conn:
            rows = (await conn.execute(CLAIM, params)).all()
        return [
            Delivery(
                id=row.delivery_id,
                url=row.url,
                attempt=row.attempts,
                secret=row.webhook_secret,
                job=Job(
                    row.id,
                    row.endpoint,
                    JobStatus(row.status),
                    row.attempt,
                    row.retries,
                    row.queued_at,
                    row.started_at,
                    row.finished_at,
                    row.worker_id,
                    row.error,
                    row.output,
                ),
                input=row.input,
            )
            for row in rows
        ]

    async def states(self, endpoint: str, job_id: str) -> list[DeliveryState]:
        """Where the job's webhook deliveries stand (for operators and tests)."""
        async with self._db.transaction() as conn:
            rows = (await conn.execute(STATES, {"endpoint": endpoint, "id": job_id})).all()
        return [DeliveryState(*row) for row in rows]

    async def delivered(self, delivery_id: int, now: datetime) -> None:
        await self._run(DELIVERED, id=delivery_id, now=now)

    async def retry_at(self, delivery_id: int, at: datetime, error: str) -> None:
        await self._run(RETRY, id=delivery_id, at=at, error=error)

    async def give_up(self, delivery_id: int, now: datetime, error: str) -> None:
        await self._run(GIVE_UP, id=delivery_id, now=now, error=error)

    async def prune_jobs(self, now: datetime, limit: int = 1000) -> int:
        """Deletes up to `limit` jobs past their retention or TTL; returns how many."""
        async with self._db.transaction() as conn:
            result = await conn.execute(PRUNE, {"now": now, "limit": limit})
        return int(result.rowcount)

    async def _run(self, statement: object, **params: object) -> None:
        async with self._db.transaction() as conn:
            await conn.execute(statement, params)  # type: ignore[call-overload]
