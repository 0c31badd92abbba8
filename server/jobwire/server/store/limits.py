"""Rate-limit windows shared by the replicas, and the queue size the admission rule reads."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from jobwire.server.store.database import Database, sql

# One statement per flush adds every local count to its window and returns the totals of all replicas.
# Rows come sorted (by the caller), so two replicas lock them in the same order and cannot deadlock.
# Windows of endpoints deleted meanwhile are skipped rather than failing the batch.
ADD_COUNTS = sql(
    """
    INSERT INTO rate_windows (endpoint, operation, window_start, count)
    SELECT u.endpoint, u.operation, u.window_start, u.count
    FROM unnest(
        CAST(:endpoints AS text[]), CAST(:operations AS text[]),
        CAST(:starts AS timestamptz[]), CAST(:counts AS bigint[])
    ) AS u(endpoint, operation, window_start, count)
    WHERE EXISTS (SELECT 1 FROM endpoints e WHERE e.name = u.endpoint)
    ON CONFLICT (endpoint, operation, window_start) DO UPDATE SET count = rate_windows.count + EXCLUDED.count
    RETURNING endpoint, operation, window_start, count AS total
    """
)

PRUNE = sql("DELETE FROM rate_windows WHERE window_start < :before")

# The partial claim index holds exactly the queued jobs, so this count costs the queue's size, not the
# table's.
QUEUE_SIZE = sql("SELECT count(*) FROM jobs WHERE endpoint = :endpoint AND status = 'IN_QUEUE'")

WindowKey = tuple[str, str, datetime]


class LimitStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add_counts(self, counts: Sequence[tuple[WindowKey, int]]) -> dict[WindowKey, int]:
        """Adds each count to its window; returns every window's total across replicas."""
        ordered = sorted(counts)
        params = {
            "endpoints": [key[0] for key, _ in ordered],
            "operations": [key[1] for key, _ in ordered],
            "starts": [key[2] for key, _ in ordered],
            "counts": [count for _, count in ordered],
        }
        rows = await self._db.fetch(ADD_COUNTS, params)
        return {(row["endpoint"], row["operation"], row["window_start"]): int(row["total"]) for row in rows}

    async def prune(self, before: datetime) -> None:
        await self._db.fetch(PRUNE, {"before": before})

    async def queue_size(self, endpoint: str) -> int:
        row = await self._db.fetch_one(QUEUE_SIZE, {"endpoint": endpoint})
        assert row is not None  # count(*) always answers
        return int(row[0])
