"""Every SQL statement on the workers table (connected workers, for health across replicas)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from jobwire.server.store.database import Database, sql

REGISTER = sql(
    """
    INSERT INTO workers (id, endpoint, session_id, kind, slots, busy, draining, sdk_version, accelerators,
                         connected_at, last_seen_at)
    VALUES (:id, :endpoint, :session_id, :kind, :slots, 0, false, :sdk_version, :accelerators, :now, :now)
    ON CONFLICT (id) DO UPDATE SET
        endpoint = EXCLUDED.endpoint, session_id = EXCLUDED.session_id, kind = EXCLUDED.kind,
        slots = EXCLUDED.slots, busy = 0, draining = false, sdk_version = EXCLUDED.sdk_version,
        accelerators = EXCLUDED.accelerators, connected_at = EXCLUDED.connected_at,
        last_seen_at = EXCLUDED.last_seen_at
    """
)

TOUCH = sql(
    """
    UPDATE workers w SET last_seen_at = :now, busy = v.busy, draining = v.draining
    FROM unnest(CAST(:ids AS text[]), CAST(:sessions AS text[]), CAST(:busy AS integer[]),
                CAST(:draining AS boolean[])) AS v(id, session_id, busy, draining)
    WHERE w.id = v.id AND w.session_id = v.session_id
    """
)

# Only the session that registered the row removes it: a worker that reconnected keeps its new row.
REMOVE = sql("DELETE FROM workers WHERE id = :id AND session_id = :session_id")

COUNT = sql(
    """
    SELECT
        count(*) FILTER (WHERE fresh AND busy = 0) AS idle,
        count(*) FILTER (WHERE fresh AND busy > 0) AS running,
        count(*) FILTER (WHERE fresh AND busy < slots AND NOT draining) AS ready,
        count(*) FILTER (WHERE NOT fresh) AS unhealthy
    FROM (SELECT *, last_seen_at > :stale_before AS fresh FROM workers WHERE endpoint = :endpoint) w
    """
)

PRUNE = sql("DELETE FROM workers WHERE last_seen_at < :before")


@dataclass(frozen=True)
class WorkerRow:
    id: str
    endpoint: str
    session_id: str
    kind: str
    slots: int
    sdk_version: str
    accelerators: str


@dataclass(frozen=True)
class WorkerPresence:
    id: str
    session_id: str
    busy: int
    draining: bool


@dataclass(frozen=True)
class WorkerCounts:
    idle: int = 0
    running: int = 0
    ready: int = 0
    unhealthy: int = 0


class WorkerStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def register(self, worker: WorkerRow, now: datetime) -> None:
        await self._db.fetch(REGISTER, {**worker.__dict__, "now": now})

    async def touch(self, presences: list[WorkerPresence], now: datetime) -> None:
        """Refreshes many workers' liveness and load in one statement."""
        if not presences:
            return
        params = {
            "ids": [p.id for p in presences],
            "sessions": [p.session_id for p in presences],
            "busy": [p.busy for p in presences],
            "draining": [p.draining for p in presences],
            "now": now,
        }
        await self._db.fetch(TOUCH, params)

    async def remove(self, worker_id: str, session_id: str) -> None:
        await self._db.fetch(REMOVE, {"id": worker_id, "session_id": session_id})

    async def count(self, endpoint: str, stale_before: datetime) -> WorkerCounts:
        row = await self._db.fetch_one(COUNT, {"endpoint": endpoint, "stale_before": stale_before})
        assert row is not None  # an aggregate without GROUP BY always has its row
        return WorkerCounts(
            idle=row["idle"], running=row["running"], ready=row["ready"], unhealthy=row["unhealthy"]
        )

    async def prune(self, before: datetime) -> None:
        """Forgets workers not seen since `before` (their replica died without removing them)."""
        await self._db.fetch(PRUNE, {"before": before})
