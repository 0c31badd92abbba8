"""Read-only statistics for the metrics scrape: one statement for every endpoint's job figures."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import text

from jobwire.server.store.database import Database

# Every endpoint (LEFT JOIN: an endpoint without jobs still reports a queue depth of 0), its live jobs
# by state (the health call's rule: not expired, result still retained), and for the IN_QUEUE group
# the age of the oldest queued job. The statement timeout bounds what one scrape may cost.
ENDPOINT_STATS = text(
    """
    SELECT e.name AS endpoint, j.status, count(j.seq) AS n,
           EXTRACT(EPOCH FROM CAST(:now AS timestamptz) - min(j.queued_at)) AS oldest_s
    FROM endpoints e
    LEFT JOIN jobs j
      ON j.endpoint = e.name AND j.expires_at > :now AND (j.retain_until IS NULL OR j.retain_until > :now)
    GROUP BY e.name, j.status
    ORDER BY e.name
    """
)
STATEMENT_TIMEOUT = text("SET LOCAL statement_timeout = 5000")


@dataclass(frozen=True)
class EndpointStats:
    endpoint: str
    #: Live jobs by status name (IN_QUEUE, ...); states without jobs are absent.
    jobs: Mapping[str, int] = field(default_factory=dict)
    #: Seconds the oldest queued job has waited; 0 when nothing is queued.
    oldest_queued_age_s: float = 0.0


class StatsStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def endpoint_stats(self, now: datetime) -> list[EndpointStats]:
        """Every endpoint's jobs by state and oldest queued age, as of `now`."""
        async with self._db.transaction() as conn:
            await conn.execute(STATEMENT_TIMEOUT)
            rows = (await conn.execute(ENDPOINT_STATS, {"now": now})).all()
        jobs: dict[str, dict[str, int]] = {}
        oldest: dict[str, float] = {}
        for row in rows:
            counts = jobs.setdefault(row.endpoint, {})
            if row.status is None:  # the LEFT JOIN's row of an endpoint without jobs
                continue
            counts[row.status] = int(row.n)
            if row.status == "IN_QUEUE" and row.oldest_s is not None:
                oldest[row.endpoint] = max(0.0, float(row.oldest_s))
        return [EndpointStats(name, counts, oldest.get(name, 0.0)) for name, counts in jobs.items()]
