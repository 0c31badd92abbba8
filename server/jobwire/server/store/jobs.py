"""Every SQL statement on jobs, their payloads and their stream chunks.

One method per transition, one statement per method. Each UPDATE is guarded by the state it expects,
and worker reports are fenced by `(job id, attempt)`, so a late report from a dead attempt changes
nothing. Times are parameters (`now`), never the database's clock, so tests can move time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from jobwire.server.model import Chunk, Job, JobCounts, JobStatus, NewJob
from jobwire.server.store.batch import GroupCommit
from jobwire.server.store.database import (
    JOB_CHUNKS,
    JOB_ENDED,
    JOB_QUEUED,
    QUEUE_PURGED,
    Database,
    Sql,
    sql,
)

# Visible: neither past its TTL nor past its retention (also what `/requests` lists).
ALIVE = "j.expires_at > :now AND (j.retain_until IS NULL OR j.retain_until > :now)"
VIEW = (
    "j.id, j.endpoint, j.status, j.attempt, j.retries, j.queued_at, j.started_at, j.finished_at, "
    "j.worker_id, j.error"
)

#: Inputs and outputs up to this many bytes live in the job's own row (`jobs.input`, `jobs.output`);
#: larger ones in `job_payloads`. A separate row costs Postgres an insert, an index entry and its WAL
#: for every job, which a small document (the usual prompt, the usual result) does not need; the two
#: inline columns together stay under the row size (about 2 kB) at which Postgres starts to compress
#: and move values out of line on every update of the row. The statements decide, from the length.
INLINE_MAX = 768


def _inline(value: str) -> str:
    """The value for the inline column: itself when small, else NULL (it goes to `job_payloads`)."""
    return f"CASE WHEN octet_length({value}) <= {INLINE_MAX} THEN {value} END"


def _apart(value: str) -> str:
    """True for a value too large for the row (NULL for a missing one: nothing to store)."""
    return f"octet_length({value}) > {INLINE_MAX}"


def _outbox(ended: str) -> str:
    """A CTE that queues the webhook of every job in `ended` (which returns seq and webhook), in the same
    statement that ends the job."""
    return f"""outbox AS (
        INSERT INTO webhook_deliveries (job_seq, url, next_attempt_at, created_at)
        SELECT seq, webhook, :now, :now FROM {ended} WHERE webhook IS NOT NULL
    )"""


# The view columns of the rows a finish returns (its `done` CTE returns VIEW): the output is the report's.
_DONE_VIEW = VIEW.replace("j.", "done.")

# The output a view shows: the latest progress update while the job runs, its result afterwards (inline
# or apart; a running job has no inline output: it is set when the job ends and cleared by a retry).
_OUTPUT = "COALESCE(j.output, p.data) AS output"
_OUTPUT_JOIN = (
    "LEFT JOIN job_payloads p ON p.job_seq = j.seq "
    "AND p.kind = CASE WHEN j.status = 'IN_PROGRESS' THEN 'progress' ELSE 'output' END"
)

_ENDED = (
    "finished_at = :now, lease_until = NULL, deadline_at = NULL, "
    "retain_until = CAST(:now AS timestamptz) + retention_ms * interval '1 millisecond'"
)

ENQUEUE = sql(
    f"""
    WITH new_job AS (
        INSERT INTO jobs (id, endpoint, status, priority, max_attempts, sync, webhook, execution_timeout_ms,
                          ttl_ms, retention_ms, created_at, queued_at, expires_at, idempotency_key, input)
        VALUES (:id, :endpoint, 'IN_QUEUE', :priority, :max_attempts, :sync, :webhook, :execution_timeout_ms,
                :ttl_ms, :retention_ms, :now, :now,
                CAST(:now AS timestamptz) + CAST(:ttl_ms AS integer) * interval '1 millisecond',
                :idempotency_key, {_inline("CAST(:input AS bytea)")})
        ON CONFLICT (endpoint, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
        RETURNING seq
    ), payloads AS (
        INSERT INTO job_payloads (job_seq, kind, data)
        SELECT seq, 'input', :input FROM new_job WHERE {_apart("CAST(:input AS bytea)")}
        UNION ALL
        SELECT seq, 's3_config', CAST(:s3_config AS bytea) FROM new_job
        WHERE CAST(:s3_config AS bytea) IS NOT NULL
    )
    SELECT seq, pg_notify('{JOB_QUEUED}', :endpoint) FROM new_job
    """
)

# ENQUEUE for a job with an idempotency key when an idle worker of this replica has a slot reserved for
# it: unless older jobs are waiting (they go first), the job is inserted as its first attempt, running on
# that worker, so it skips a claim round trip. Otherwise it is queued as by ENQUEUE and the reservation is
# given back. (Jobs without a key get the same from ENQUEUE_MANY.)
ENQUEUE_CLAIMED = sql(
    f"""
    WITH ahead AS (
        SELECT EXISTS (
            SELECT 1 FROM jobs WHERE endpoint = :endpoint AND status = 'IN_QUEUE' AND expires_at > :now
        ) AS waiting
    ), new_job AS (
        INSERT INTO jobs (id, endpoint, status, priority, max_attempts, sync, webhook, execution_timeout_ms,
                          ttl_ms, retention_ms, created_at, queued_at, expires_at, idempotency_key,
                          attempt, started_at, worker_id, lease_until, deadline_at, input)
        SELECT :id, :endpoint, CASE WHEN waiting THEN 'IN_QUEUE' ELSE 'IN_PROGRESS' END, :priority,
               :max_attempts, :sync, :webhook, :execution_timeout_ms, :ttl_ms, :retention_ms, :now, :now,
               CAST(:now AS timestamptz) + CAST(:ttl_ms AS integer) * interval '1 millisecond',
               :idempotency_key,
               CASE WHEN waiting THEN 0 ELSE 1 END,
               CASE WHEN waiting THEN NULL ELSE CAST(:now AS timestamptz) END,
               CASE WHEN waiting THEN NULL ELSE CAST(:worker_id AS text) END,
               CASE WHEN waiting THEN NULL ELSE CAST(:lease_until AS timestamptz) END,
               CASE WHEN waiting THEN NULL ELSE CAST(:now AS timestamptz)
                   + CAST(:execution_timeout_ms AS integer) * interval '1 millisecond' END,
               {_inline("CAST(:input AS bytea)")}
        FROM ahead
        ON CONFLICT (endpoint, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
        RETURNING seq, status
    ), payloads AS (
        INSERT INTO job_payloads (job_seq, kind, data)
        SELECT seq, 'input', :input FROM new_job WHERE {_apart("CAST(:input AS bytea)")}
        UNION ALL
        SELECT seq, 's3_config', CAST(:s3_config AS bytea) FROM new_job
        WHERE CAST(:s3_config AS bytea) IS NOT NULL
    )
    SELECT seq, status, CASE WHEN status = 'IN_QUEUE' THEN pg_notify('{JOB_QUEUED}', :endpoint) END
    FROM new_job
    """
)

# Many submissions (without idempotency keys) in one statement (see `GroupCommit`); one NOTIFY per endpoint
# with queued jobs. A submission with a reserved slot (`worker_id`) starts on it at once, as with
# ENQUEUE_CLAIMED, unless older jobs of its endpoint are waiting. Every inserted row is returned, with its
# status: the notifications CTE runs only through that join, so the select must not filter rows away.
_ENQUEUE_MANY_CTES = f"""
    submitted AS (
        SELECT * FROM unnest(
            CAST(:id AS text[]), CAST(:endpoint AS text[]), CAST(:priority AS smallint[]),
            CAST(:max_attempts AS integer[]), CAST(:sync AS boolean[]), CAST(:webhook AS text[]),
            CAST(:execution_timeout_ms AS integer[]), CAST(:ttl_ms AS integer[]),
            CAST(:retention_ms AS integer[]), CAST(:now AS timestamptz[]), CAST(:input AS bytea[]),
            CAST(:s3_config AS bytea[]), CAST(:worker_id AS text[]), CAST(:lease_until AS timestamptz[])
        ) AS s(id, endpoint, priority, max_attempts, sync, webhook, execution_timeout_ms, ttl_ms,
               retention_ms, now, input, s3_config, worker_id, lease_until)
    ), ahead AS (
        SELECT e.endpoint, EXISTS (
            SELECT 1 FROM jobs WHERE endpoint = e.endpoint AND status = 'IN_QUEUE' AND expires_at > e.now
        ) AS waiting
        FROM (SELECT endpoint, min(now) AS now FROM submitted WHERE worker_id IS NOT NULL GROUP BY endpoint) e
    ), placed AS (
        SELECT s.*, s.worker_id IS NOT NULL AND a.waiting IS FALSE AS started
        FROM submitted s LEFT JOIN ahead a ON a.endpoint = s.endpoint
    ), new_jobs AS (
        INSERT INTO jobs (id, endpoint, status, priority, max_attempts, sync, webhook, execution_timeout_ms,
                          ttl_ms, retention_ms, created_at, queued_at, expires_at,
                          attempt, started_at, worker_id, lease_until, deadline_at, input)
        SELECT id, endpoint, CASE WHEN started THEN 'IN_PROGRESS' ELSE 'IN_QUEUE' END, priority, max_attempts,
               sync, webhook, execution_timeout_ms, ttl_ms, retention_ms, now, now,
               now + ttl_ms * interval '1 millisecond',
               CASE WHEN started THEN 1 ELSE 0 END,
               CASE WHEN started THEN now END,
               CASE WHEN started THEN worker_id END,
               CASE WHEN started THEN lease_until END,
               CASE WHEN started THEN now + execution_timeout_ms * interval '1 millisecond' END,
               {_inline("input")}
        FROM placed
        RETURNING seq, id, endpoint, status
    ), payloads AS (
        INSERT INTO job_payloads (job_seq, kind, data)
        SELECT j.seq, 'input', s.input FROM new_jobs j JOIN submitted s ON s.id = j.id
        WHERE {_apart("s.input")}
        UNION ALL
        SELECT j.seq, 's3_config', s.s3_config FROM new_jobs j JOIN submitted s ON s.id = j.id
        WHERE s.s3_config IS NOT NULL
    ), queued_notified AS (
        SELECT pg_notify('{JOB_QUEUED}', e.endpoint)
        FROM (SELECT DISTINCT endpoint FROM new_jobs WHERE status = 'IN_QUEUE') e
    )"""

ENQUEUE_MANY = sql(
    f"""
    WITH {_ENQUEUE_MANY_CTES}
    SELECT j.id, j.status FROM new_jobs j CROSS JOIN (SELECT count(*) FROM queued_notified) sent
    """
)

GET_BY_IDEMPOTENCY_KEY = sql(
    f"""
    SELECT {VIEW}, {_OUTPUT}, {ALIVE} AS alive
    FROM jobs j
    {_OUTPUT_JOIN}
    WHERE j.endpoint = :endpoint AND j.idempotency_key = :key
    """
)

# A key whose job has expired but is not pruned yet may be used again.
FORGET_IDEMPOTENCY_KEY = sql(
    f"UPDATE jobs j SET idempotency_key = NULL WHERE j.endpoint = :endpoint AND j.idempotency_key = :key "
    f"AND NOT ({ALIVE})"
)

GET = sql(
    f"""
    SELECT {VIEW}, {_OUTPUT}
    FROM jobs j
    {_OUTPUT_JOIN}
    WHERE j.endpoint = :endpoint AND j.id = :id AND {ALIVE}
    """
)

CANCEL = sql(
    f"""
    WITH ended AS (
        UPDATE jobs j SET status = 'CANCELLED', {_ENDED}
        WHERE j.endpoint = :endpoint AND j.id = :id AND j.status IN ('IN_QUEUE', 'IN_PROGRESS') AND {ALIVE}
        RETURNING {VIEW}, j.seq, j.webhook
    ), {_outbox("ended")}
    SELECT ended.*, NULL::bytea AS output, pg_notify('{JOB_ENDED}', ended.id) FROM ended
    """
)

RETRY = sql(
    f"""
    WITH target AS (
        UPDATE jobs j
        SET status = 'IN_QUEUE', retries = retries + 1, max_attempts = attempt + :attempt_budget,
            queued_at = :now, started_at = NULL, finished_at = NULL, retain_until = NULL, lease_until = NULL,
            worker_id = NULL, error = NULL, output = NULL, stream_read_seq = 0,
            expires_at = CAST(:now AS timestamptz) + ttl_ms * interval '1 millisecond'
        WHERE j.endpoint = :endpoint AND j.id = :id AND j.status IN ('FAILED', 'TIMED_OUT') AND {ALIVE}
        RETURNING j.*
    ), dropped_payloads AS (
        DELETE FROM job_payloads p USING target
        WHERE p.job_seq = target.seq AND p.kind IN ('output', 'progress')
    ), dropped_chunks AS (
        DELETE FROM job_chunks c USING target WHERE c.job_seq = target.seq
    ), counted AS (
        UPDATE endpoints e SET retried_total = retried_total + 1 FROM target WHERE e.name = target.endpoint
    )
    SELECT {VIEW}, NULL::bytea AS output, pg_notify('{JOB_QUEUED}', j.endpoint) FROM target j
    """
)

PURGE = sql(
    f"""
    WITH purged AS (
        UPDATE jobs j SET status = 'CANCELLED', {_ENDED}
        WHERE j.endpoint = :endpoint AND j.status = 'IN_QUEUE' AND {ALIVE}
        RETURNING j.seq, j.webhook
    ), {_outbox("purged")}
    SELECT count(*) AS removed, pg_notify('{QUEUE_PURGED}', :endpoint) FROM purged
    """
)

COUNT = sql(
    f"""
    SELECT j.status, count(*) AS n FROM jobs j WHERE j.endpoint = :endpoint AND {ALIVE} GROUP BY j.status
    UNION ALL
    SELECT 'RETRIED', retried_total FROM endpoints WHERE name = :endpoint
    """
)

CLAIM = sql(
    f"""
    WITH picked AS MATERIALIZED (
        SELECT seq FROM jobs
        WHERE endpoint = :endpoint AND status = 'IN_QUEUE' AND expires_at > :now
        ORDER BY priority, seq
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE jobs j
        SET status = 'IN_PROGRESS', attempt = attempt + 1, started_at = :now, worker_id = :worker_id,
            lease_until = :lease_until,
            deadline_at = CAST(:now AS timestamptz) + execution_timeout_ms * interval '1 millisecond'
        FROM picked WHERE j.seq = picked.seq
        RETURNING j.seq, j.priority, {VIEW}, NULL::bytea AS output, j.execution_timeout_ms, j.webhook,
                  j.input AS inline_input
    )
    SELECT c.seq, c.priority, {VIEW.replace("j.", "c.")}, c.output, c.execution_timeout_ms, c.webhook,
           COALESCE(c.inline_input, i.data) AS input, s.data AS s3_config
    FROM claimed c
    LEFT JOIN job_payloads i ON i.job_seq = c.seq AND i.kind = 'input'
    LEFT JOIN job_payloads s ON s.job_seq = c.seq AND s.kind = 's3_config'
    ORDER BY c.priority, c.seq
    """
)

# One result: FINISH_MANY for a batch of one, without the arrays (a 10 MB output is not copied into one).
FINISH = sql(
    f"""
    WITH done AS (
        UPDATE jobs j
        SET status = :status, error = :error, output = {_inline("CAST(:output AS bytea)")}, {_ENDED}
        WHERE j.id = :id AND j.attempt = :attempt AND j.status = 'IN_PROGRESS'
        RETURNING j.seq, j.webhook, {VIEW}
    ), {_outbox("done")}, stored AS (
        INSERT INTO job_payloads (job_seq, kind, data)
        SELECT seq, 'output', CAST(:output AS bytea) FROM done WHERE {_apart("CAST(:output AS bytea)")}
        ON CONFLICT (job_seq, kind) DO UPDATE SET data = EXCLUDED.data
    )
    SELECT {_DONE_VIEW}, pg_notify('{JOB_ENDED}', id) FROM done
    """
)

# Many results in one statement (see `GroupCommit`): each row is still guarded by its own (id, attempt) and
# IN_PROGRESS, so a stale report in the batch changes nothing while the others land.
_FINISH_MANY_CTES = f"""
    reports AS (
        SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:attempts AS integer[]), CAST(:statuses AS text[]),
                             CAST(:outputs AS bytea[]), CAST(:errors AS text[]), CAST(:nows AS timestamptz[]))
            AS r(id, attempt, status, output, error, now)
    ), done AS (
        UPDATE jobs j SET status = r.status, error = r.error, output = {_inline("r.output")},
            finished_at = r.now, lease_until = NULL,
            deadline_at = NULL, retain_until = r.now + j.retention_ms * interval '1 millisecond'
        FROM reports r
        WHERE j.id = r.id AND j.attempt = r.attempt AND j.status = 'IN_PROGRESS'
        RETURNING j.seq, j.webhook, r.output, r.now, {VIEW}
    ), outbox AS (
        INSERT INTO webhook_deliveries (job_seq, url, next_attempt_at, created_at)
        SELECT seq, webhook, now, now FROM done WHERE webhook IS NOT NULL
    ), stored AS (
        INSERT INTO job_payloads (job_seq, kind, data)
        SELECT seq, 'output', output FROM done WHERE {_apart("output")}
        ON CONFLICT (job_seq, kind) DO UPDATE SET data = EXCLUDED.data
    ), ended_notified AS (
        SELECT pg_notify('{JOB_ENDED}', string_agg(id, ' ')) FROM (
            SELECT id, (row_number() OVER () - 1) / 150 AS part FROM done
        ) numbered GROUP BY part
    )"""

# A SELECT in WITH runs only when referenced: the joins make the notifications go out.
FINISH_MANY = sql(
    f"""
    WITH {_FINISH_MANY_CTES}
    SELECT {_DONE_VIEW} FROM done CROSS JOIN (SELECT count(*) FROM ended_notified) sent
    """
)

# ENQUEUE_MANY and FINISH_MANY in one statement, for submissions and results that queued up together:
# one commit (one WAL flush) and one round trip instead of two. The rows of both come back, told apart by
# `ended`: true for a finished job's view, false for a submission's id and status.
WRITE_MANY = sql(
    f"""
    WITH {_ENQUEUE_MANY_CTES}, {_FINISH_MANY_CTES}
    SELECT false AS ended, j.id, NULL AS endpoint, j.status, NULL::integer AS attempt,
           NULL::integer AS retries, NULL::timestamptz AS queued_at, NULL::timestamptz AS started_at,
           NULL::timestamptz AS finished_at, NULL AS worker_id, NULL AS error
    FROM new_jobs j CROSS JOIN (SELECT count(*) FROM queued_notified) sent
    UNION ALL
    SELECT true, {_DONE_VIEW} FROM done CROSS JOIN (SELECT count(*) FROM ended_notified) sent
    """
)

APPEND_CHUNK = sql(
    f"""
    WITH running AS (
        SELECT seq, id FROM jobs WHERE id = :id AND attempt = :attempt AND status = 'IN_PROGRESS'
    ), stored AS (
        INSERT INTO job_chunks (job_seq, seq, data, created_at)
        SELECT running.seq,
               COALESCE(CAST(:seq AS integer),
                        (SELECT COALESCE(max(c.seq), 0) + 1 FROM job_chunks c WHERE c.job_seq = running.seq)),
               :data, :now
        FROM running
        ON CONFLICT (job_seq, seq) DO NOTHING
        RETURNING job_seq
    )
    SELECT running.id, pg_notify('{JOB_CHUNKS}', running.id) FROM running
    """
)

# Runpod's /stream: the chunks no earlier read returned, with the status seen in the same snapshot;
# the cursor moves in the same statement, so two readers never both get a chunk.
READ_NEW_CHUNKS = sql(
    f"""
    WITH cur AS (
        SELECT j.seq, j.id, j.status, j.stream_read_seq FROM jobs j
        WHERE j.endpoint = :endpoint AND j.id = :id AND {ALIVE}
        FOR UPDATE
    ), fresh AS (
        SELECT c.seq, c.data FROM job_chunks c JOIN cur ON c.job_seq = cur.seq AND c.seq > cur.stream_read_seq
    ), moved AS (
        UPDATE jobs SET stream_read_seq = (SELECT max(seq) FROM fresh)
        FROM cur WHERE jobs.seq = cur.seq AND EXISTS (SELECT 1 FROM fresh)
    )
    SELECT cur.status, fresh.seq, fresh.data FROM cur LEFT JOIN fresh ON true ORDER BY fresh.seq
    """
)

SET_PROGRESS = sql(
    """
    INSERT INTO job_payloads (job_seq, kind, data)
    SELECT seq, 'progress', :data FROM jobs WHERE id = :id AND attempt = :attempt AND status = 'IN_PROGRESS'
    ON CONFLICT (job_seq, kind) DO UPDATE SET data = EXCLUDED.data
    RETURNING job_seq
    """
)

# `lease_until IS NOT NULL` lets it walk the lease index (the running attempts) rather than the table.
EXTEND_LEASES = sql(
    """
    UPDATE jobs SET lease_until = :lease_until
    WHERE status = 'IN_PROGRESS' AND lease_until IS NOT NULL AND worker_id = ANY(CAST(:worker_ids AS text[]))
    """
)

TIME_OUT = sql(
    f"""
    WITH due AS (
        SELECT seq FROM jobs WHERE status = 'IN_PROGRESS' AND deadline_at < :now
        ORDER BY deadline_at LIMIT :limit FOR UPDATE SKIP LOCKED
    ), ended AS (
        UPDATE jobs j
        SET status = 'TIMED_OUT', {_ENDED},
            error = 'execution timeout of ' || j.execution_timeout_ms || ' ms exceeded'
        FROM due WHERE j.seq = due.seq
        RETURNING j.seq, j.id, j.webhook
    ), {_outbox("ended")}
    SELECT id, pg_notify('{JOB_ENDED}', id) FROM ended
    """
)


def _release(selection: str) -> Sql:
    """Gives running attempts up (their worker is gone): back to the queue, or FAILED once the job has
    used all its attempts. The attempt's progress and chunks go, so the next attempt starts clean."""
    spent = "j.attempt >= j.max_attempts"
    return sql(
        f"""
        WITH moved AS (
            UPDATE jobs j SET
                status = CASE WHEN {spent} THEN 'FAILED' ELSE 'IN_QUEUE' END,
                error = CASE WHEN {spent} THEN :reason END,
                queued_at = CASE WHEN {spent} THEN j.queued_at ELSE :now END,
                started_at = CASE WHEN {spent} THEN j.started_at END,
                worker_id = CASE WHEN {spent} THEN j.worker_id END,
                finished_at = CASE WHEN {spent} THEN CAST(:now AS timestamptz) END,
                retain_until = CASE WHEN {spent}
                    THEN CAST(:now AS timestamptz) + j.retention_ms * interval '1 millisecond' END,
                lease_until = NULL, deadline_at = NULL, stream_read_seq = 0
            WHERE j.status = 'IN_PROGRESS' AND {selection}
            RETURNING j.seq, j.id, j.endpoint, j.status, j.webhook
        ), failed AS (
            SELECT seq, webhook FROM moved WHERE status = 'FAILED'
        ), {_outbox("failed")}, dropped_chunks AS (
            DELETE FROM job_chunks c USING moved WHERE c.job_seq = moved.seq AND moved.status = 'IN_QUEUE'
        ), dropped_progress AS (
            DELETE FROM job_payloads p USING moved WHERE p.job_seq = moved.seq AND p.kind = 'progress'
        )
        SELECT id, status, CASE WHEN status = 'FAILED' THEN pg_notify('{JOB_ENDED}', id)
                                ELSE pg_notify('{JOB_QUEUED}', endpoint) END
        FROM moved
        """
    )


RELEASE_ATTEMPTS = _release(
    "(j.id, j.attempt) IN (SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:attempts AS integer[])))"
)
RESCUE_EXPIRED = _release(
    "j.seq IN (SELECT seq FROM jobs WHERE status = 'IN_PROGRESS' AND lease_until < :now "
    "ORDER BY lease_until LIMIT :limit FOR UPDATE SKIP LOCKED)"
)

# Runpod's `/status?ttl=`: an ended job's result goes sooner; a running one's will be kept at most that long.
SHORTEN_RETENTION = sql(
    f"""
    UPDATE jobs j SET
        retain_until = LEAST(
            j.retain_until, CAST(:now AS timestamptz) + CAST(:ttl_ms AS integer) * interval '1 millisecond'
        ),
        retention_ms = LEAST(j.retention_ms, CAST(:ttl_ms AS integer))
    WHERE j.endpoint = :endpoint AND j.id = :id AND {ALIVE}
    """
)

JOB_STATUS = sql("SELECT status FROM jobs WHERE id = :id")

RUNNING_ATTEMPT = sql(
    "SELECT attempt FROM jobs WHERE id = :id AND endpoint = :endpoint AND worker_id = :worker_id "
    "AND status = 'IN_PROGRESS'"
)

CHUNKS_SINCE = sql(
    f"""
    SELECT c.seq, c.data FROM jobs j JOIN job_chunks c ON c.job_seq = j.seq
    WHERE j.endpoint = :endpoint AND j.id = :id AND c.seq >= :from_seq AND {ALIVE}
    ORDER BY c.seq
    LIMIT :limit
    """
)


@dataclass(frozen=True)
class ClaimedJob:
    """A job handed to a worker: what its handler needs."""

    job: Job
    input: bytes
    s3_config: bytes | None
    execution_timeout_ms: int
    webhook: str | None


@dataclass(frozen=True)
class Reservation:
    """A free slot of a local worker, held for a job being submitted (see `JobStore.on_enqueue`)."""

    worker_id: str
    lease_until: datetime
    #: Hands the job, inserted as running on this worker, over to it.
    deliver: Callable[[ClaimedJob], None]
    #: Gives the slot back: the job was queued instead (older jobs were waiting), or not inserted.
    release: Callable[[], None]


@dataclass(frozen=True)
class _Submit:
    job: NewJob
    now: datetime


@dataclass(frozen=True)
class _Finish:
    job_id: str
    attempt: int
    status: JobStatus
    output: bytes | None
    error: str | None
    now: datetime


_Write = _Submit | _Finish


def _job_of(write: _Write) -> str:
    """The group commit's key: a job's submission or result never shares a write with another of its own."""
    return write.job.id if isinstance(write, _Submit) else write.job_id


#: A write with an input or output larger than this stores each kind in its own statement: the arrays of
#: the shared statement would cost a copy of each payload more (see `_enqueue_many`).
_SHARED_WRITE_MAX_BYTES = 64 * 1024


def _bulky(submissions: list[_Submit], results: list[_Finish]) -> bool:
    return any(len(s.job.input) > _SHARED_WRITE_MAX_BYTES for s in submissions) or any(
        r.output is not None and len(r.output) > _SHARED_WRITE_MAX_BYTES for r in results
    )


def _finish_params(results: list[_Finish]) -> dict[str, list[Any]]:
    """FINISH_MANY's parameters, one array per field of the reports."""
    return {
        "ids": [r.job_id for r in results],
        "attempts": [r.attempt for r in results],
        "statuses": [str(r.status) for r in results],
        "outputs": [r.output for r in results],
        "errors": [r.error for r in results],
        "nows": [r.now for r in results],
    }


def _views(results: list[_Finish], ended_rows: list[Any]) -> list[Job | None]:
    """Each result's final view from the rows of the jobs it ended (the output is the report's); None for a
    report that ended nothing."""
    ended = {row["id"]: row for row in ended_rows}
    return [_view(ended[r.job_id], r.output) if r.job_id in ended else None for r in results]


def _release_slots(reservations: list[Reservation | None]) -> None:
    for reservation in reservations:
        if reservation is not None:
            reservation.release()


def job_view(row: Any) -> Job:
    return _view(row, row["output"])


def _view(row: Any, output: bytes | None) -> Job:
    return Job(
        id=row["id"],
        endpoint=row["endpoint"],
        status=JobStatus(row["status"]),
        attempt=row["attempt"],
        retries=row["retries"],
        queued_at=row["queued_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        worker_id=row["worker_id"],
        error=row["error"],
        output=output,
    )


def _started(job: NewJob, worker_id: str, now: datetime) -> ClaimedJob:
    """The first attempt of a job inserted as running (what CLAIM would have returned for it)."""
    view = Job(job.id, job.endpoint, JobStatus.IN_PROGRESS, 1, 0, now, now, None, worker_id, None, None)
    return ClaimedJob(view, job.input, job.s3_config, job.execution_timeout_ms, job.webhook)


class JobStore:
    """Jobs in Postgres. Rows never leave this class: it returns domain dataclasses.

    Every method is one statement, run in autocommit on a pooled connection (one round trip, committed
    before it returns); submissions without an idempotency key and results of running attempts are
    group-committed together (`enqueue_job`, `finish_job`): what queues up during a write goes in the
    next one, both kinds in one statement."""

    def __init__(self, db: Database) -> None:
        self._db = db
        #: Submissions (without idempotency keys) and results of running attempts, group-committed
        #: together: what queued up during a write goes in the next one, as one statement.
        self._writes: GroupCommit[_Write, JobStatus | Job | None] = GroupCommit(self._write_many, key=_job_of)
        #: Jobs whose result is in the statement in flight (see `ending_here`).
        self._ending: set[str] = set()
        self._queued_callbacks: list[Callable[[str], None]] = []
        self._changed_callbacks: list[Callable[[str, Job | None], None]] = []
        self._reserve: Callable[[str, datetime], Reservation | None] | None = None

    def on_enqueue(self, reserve: Callable[[str, datetime], Reservation | None]) -> None:
        """`reserve(endpoint, now)` offers a local worker's free slot for each job being submitted; the
        job then starts on it in the statement that inserts it (when no older job is waiting)."""
        self._reserve = reserve

    def on_queued(self, callback: Callable[[str], None]) -> None:
        """Calls `callback(endpoint)` as soon as this process has queued a job there. NOTIFY tells every
        replica too, this one included, but only after a trip through Postgres and the LISTEN connection;
        the local call lets a dispatcher with an idle worker claim without waiting for it."""
        self._queued_callbacks.append(callback)

    def on_changed(self, callback: Callable[[str, Job | None], None]) -> None:
        """Calls `callback(job_id, ended)` as soon as this process has ended a job (`ended`: its final
        view, from the statement that ended it), stored a chunk of it or refused a report of it (`ended`
        None in both). As with `on_queued`, NOTIFY tells every replica, but the local call spares this
        process's waiters (runsync, status-sync, streams) the trip through Postgres and the LISTEN
        connection, and with the view, the read of the job too."""
        self._changed_callbacks.append(callback)

    def _changed(self, job_id: str, ended: Job | None = None) -> None:
        for callback in self._changed_callbacks:
            callback(job_id, ended)

    def _queued(self, endpoint: str) -> None:
        for callback in self._queued_callbacks:
            callback(endpoint)

    async def _rows(self, statement: Sql, **params: Any) -> list[Any]:
        return await self._db.fetch(statement, params)

    async def _one(self, statement: Sql, **params: Any) -> Any:
        return await self._db.fetch_one(statement, params)

    async def enqueue_job(self, job: NewJob, now: datetime) -> Job:
        """Queues the job; with an idempotency key already used by a live job, returns that job instead."""
        for _ in range(2):
            status = await self._insert(job, now)
            if status == JobStatus.IN_QUEUE:
                self._queued(job.endpoint)
            created = status is not None
            if created or job.idempotency_key is None:
                return Job(job.id, job.endpoint, JobStatus.IN_QUEUE, 0, 0, now, None, None, None, None, None)
            row = await self._one(
                GET_BY_IDEMPOTENCY_KEY, endpoint=job.endpoint, key=job.idempotency_key, now=now
            )
            if row is not None and row["alive"]:
                return job_view(row)
            await self._one(FORGET_IDEMPOTENCY_KEY, endpoint=job.endpoint, key=job.idempotency_key, now=now)
        raise RuntimeError("the idempotency key is being reused concurrently")  # pragma: no cover

    async def _insert(self, job: NewJob, now: datetime) -> JobStatus | None:
        """Inserts the job, queued or (on a free slot of a local worker) running; None when its
        idempotency key is taken."""
        if job.idempotency_key is None:
            # Group-committed: a lone submission is written at once, the ones that arrive meanwhile go
            # together in the next write, and each write starts as many of its jobs as local workers
            # have free slots (`_enqueue_many`). The write does not depend on the caller, so a submitter
            # that goes away cannot leave a job started on a worker that was never told.
            status = await self._writes.submit(_Submit(job, now))
            assert not isinstance(status, Job)
            return status
        reservation = self._reserve(job.endpoint, now) if self._reserve is not None else None
        # Shielded, for the same reason as the group commit's write.
        return await asyncio.shield(self._insert_single(job, now, reservation))

    async def _insert_single(
        self, job: NewJob, now: datetime, reservation: Reservation | None
    ) -> JobStatus | None:
        """One job in its own statement: started on the reserved slot (unless older jobs wait), or queued."""
        if reservation is None:
            row = await self._one(ENQUEUE, **self._insert_params(job, now))
            return None if row is None else JobStatus.IN_QUEUE
        return await self._insert_started(job, now, reservation)

    async def _insert_started(self, job: NewJob, now: datetime, reservation: Reservation) -> JobStatus | None:
        try:
            row = await self._one(
                ENQUEUE_CLAIMED, **self._insert_params(job, now), worker_id=reservation.worker_id,
                lease_until=reservation.lease_until,
            )  # fmt: skip
        except BaseException:
            reservation.release()
            raise
        if row is None or row["status"] != "IN_PROGRESS":
            reservation.release()
            return None if row is None else JobStatus.IN_QUEUE
        reservation.deliver(_started(job, reservation.worker_id, now))
        return JobStatus.IN_PROGRESS

    async def _write_many(self, writes: list[_Write]) -> list[JobStatus | Job | Exception | None]:
        """One write of the group commit: its submissions and its results in one statement when it has
        both (one commit and one round trip instead of two), else in the statement of their kind."""
        submissions = [w for w in writes if isinstance(w, _Submit)]
        results = [w for w in writes if isinstance(w, _Finish)]
        if not results:
            return [*await self._enqueue_many(submissions)]
        if not submissions:
            return [*await self._finish_many(results)]
        if _bulky(submissions, results):
            statuses, views = await self._separately(submissions, results)
        else:
            statuses, views = await self._enqueue_and_finish(submissions, results)
        queued, ended = iter(statuses), iter(views)
        return [next(queued) if isinstance(w, _Submit) else next(ended) for w in writes]

    async def _enqueue_and_finish(
        self, submissions: list[_Submit], results: list[_Finish]
    ) -> tuple[list[JobStatus | Exception | None], list[Job | Exception | None]]:
        """WRITE_MANY; a statement error (not a lost connection) sends each kind to its own statement,
        where an error reaches only the callers it concerns."""
        reservations = self._reserve_slots(submissions)
        statuses: dict[str, JobStatus] = {}

        async def store(results: list[_Finish]) -> list[Job | None]:
            rows = await self._rows(
                WRITE_MANY, **self._enqueue_params(submissions, reservations), **_finish_params(results)
            )
            statuses.update((row["id"], JobStatus(row["status"])) for row in rows if not row["ended"])
            return _views(results, [row for row in rows if row["ended"]])

        try:
            views = await self._finish_many(results, store)
        except BaseException as error:
            _release_slots(reservations)
            if isinstance(error, asyncpg.PostgresError):
                return await self._separately(submissions, results)
            raise
        return [*self._hand_over(submissions, reservations, statuses)], views

    async def _separately(
        self, submissions: list[_Submit], results: list[_Finish]
    ) -> tuple[list[JobStatus | Exception | None], list[Job | Exception | None]]:
        """Each kind in its own statement; an error of the results' statement goes to their callers only."""
        statuses = await self._enqueue_many(submissions)
        try:
            views = await self._finish_many(results)
        except Exception as error:
            views = [error] * len(results)
        return statuses, views

    async def _enqueue_many(self, submissions: list[_Submit]) -> list[JobStatus | Exception | None]:
        """Queues many jobs in one statement; those that find a free slot of a local worker start on it
        in the same statement (skipping a claim round trip), unless older jobs of the endpoint wait.
        A statement error (not a lost connection) fails the whole batch, so then each job is inserted on
        its own: only the job at fault gets the error."""
        reservations = self._reserve_slots(submissions)
        if len(submissions) == 1:
            # A lone job takes the one-row statements: the batch's arrays cost a copy of each input
            # more (a 10 MB input: 78 ms in ENQUEUE_MANY against 41 ms in ENQUEUE).
            (lone,) = submissions
            return [await self._insert_one(lone.job, lone.now, reservations[0])]
        try:
            inserted = await self._rows(ENQUEUE_MANY, **self._enqueue_params(submissions, reservations))
        except BaseException as error:
            _release_slots(reservations)
            if isinstance(error, asyncpg.PostgresError):
                return [await self._insert_one(s.job, s.now) for s in submissions]
            raise
        statuses = {row["id"]: JobStatus(row["status"]) for row in inserted}
        return [*self._hand_over(submissions, reservations, statuses)]

    def _enqueue_params(
        self, submissions: list[_Submit], reservations: list[Reservation | None]
    ) -> dict[str, list[Any]]:
        """ENQUEUE_MANY's parameters: each is the array of that parameter of the single ENQUEUE."""
        rows = [self._insert_params(s.job, s.now) for s in submissions]
        params: dict[str, list[Any]] = {name: [row[name] for row in rows] for name in rows[0]}
        params["worker_id"] = [r.worker_id if r else None for r in reservations]
        params["lease_until"] = [r.lease_until if r else None for r in reservations]
        return params

    @staticmethod
    def _hand_over(
        submissions: list[_Submit], reservations: list[Reservation | None], statuses: dict[str, JobStatus]
    ) -> list[JobStatus]:
        """Gives each job inserted as running to its reserved slot, and the other slots back; the statuses
        in the order of the submissions."""
        for submission, reservation in zip(submissions, reservations, strict=True):
            if reservation is None:
                continue
            job = submission.job
            if statuses[job.id] == JobStatus.IN_PROGRESS:
                reservation.deliver(_started(job, reservation.worker_id, submission.now))
            else:
                reservation.release()
        return [statuses[s.job.id] for s in submissions]

    def _reserve_slots(self, submissions: list[_Submit]) -> list[Reservation | None]:
        """A free local slot for each submission while there are any, most urgent first (the batch's
        jobs were submitted together; priority decides which of them start now)."""
        reservations: list[Reservation | None] = [None] * len(submissions)
        if self._reserve is None:
            return reservations
        full: set[str] = set()
        order = sorted(range(len(submissions)), key=lambda k: submissions[k].job.priority)
        for k in order:
            job, now = submissions[k].job, submissions[k].now
            if job.endpoint in full:
                continue
            reservations[k] = self._reserve(job.endpoint, now)
            if reservations[k] is None:
                full.add(job.endpoint)
        return reservations

    async def _insert_one(
        self, job: NewJob, now: datetime, reservation: Reservation | None = None
    ) -> JobStatus | Exception | None:
        """`_insert_single` for the group commit: the job's own error is returned, for its caller alone."""
        try:
            return await self._insert_single(job, now, reservation)
        except Exception as error:
            return error

    @staticmethod
    def _insert_params(job: NewJob, now: datetime) -> dict[str, Any]:
        return dict(
            id=job.id,
            endpoint=job.endpoint,
            priority=int(job.priority),
            max_attempts=job.max_attempts,
            sync=job.sync,
            webhook=job.webhook,
            execution_timeout_ms=job.execution_timeout_ms,
            ttl_ms=job.ttl_ms,
            retention_ms=job.retention_ms,
            now=now,
            input=job.input,
            s3_config=job.s3_config,
            idempotency_key=job.idempotency_key,
        )

    async def get_job(self, endpoint: str, job_id: str, now: datetime) -> Job | None:
        row = await self._one(GET, endpoint=endpoint, id=job_id, now=now)
        return None if row is None else job_view(row)

    async def cancel_job(self, endpoint: str, job_id: str, now: datetime) -> Job | None:
        """Cancels a queued or running job; None when there is no such job in either state."""
        row = await self._one(CANCEL, endpoint=endpoint, id=job_id, now=now)
        return None if row is None else job_view(row)

    async def retry_job(self, endpoint: str, job_id: str, attempt_budget: int, now: datetime) -> Job | None:
        """Requeues a FAILED or TIMED_OUT job with `attempt_budget` more attempts; None otherwise."""
        row = await self._one(RETRY, endpoint=endpoint, id=job_id, attempt_budget=attempt_budget, now=now)
        if row is None:
            return None
        self._queued(endpoint)
        return job_view(row)

    async def purge_queue(self, endpoint: str, now: datetime) -> int:
        row = await self._one(PURGE, endpoint=endpoint, now=now)
        return int(row["removed"]) if row is not None else 0

    async def count_jobs(self, endpoint: str, now: datetime) -> JobCounts:
        counts = {row["status"]: int(row["n"]) for row in await self._rows(COUNT, endpoint=endpoint, now=now)}
        return JobCounts(
            in_queue=counts.get("IN_QUEUE", 0),
            in_progress=counts.get("IN_PROGRESS", 0),
            completed=counts.get("COMPLETED", 0),
            failed=counts.get("FAILED", 0),
            cancelled=counts.get("CANCELLED", 0),
            timed_out=counts.get("TIMED_OUT", 0),
            retried=counts.get("RETRIED", 0),
        )

    async def claim_jobs(
        self, endpoint: str, worker_id: str, limit: int, lease_until: datetime, now: datetime
    ) -> list[ClaimedJob]:
        """Claims up to `limit` queued jobs (normal priority first, then oldest) for one worker."""
        rows = await self._rows(
            CLAIM, endpoint=endpoint, worker_id=worker_id, limit=limit, lease_until=lease_until, now=now
        )
        return [
            ClaimedJob(
                job=job_view(row),
                input=row["input"],
                s3_config=row["s3_config"],
                execution_timeout_ms=row["execution_timeout_ms"],
                webhook=row["webhook"],
            )
            for row in rows
        ]

    async def finish_job(
        self,
        job_id: str,
        attempt: int,
        status: JobStatus,
        output: bytes | None,
        error: str | None,
        now: datetime,
    ) -> bool:
        """Ends a running attempt; False when the attempt is no longer the job's running one. Results
        that arrive while another write is in flight are stored together in the next one."""
        if not status.is_terminal:
            raise ValueError(f"{status} is not a terminal state")
        ended = await self._writes.submit(_Finish(job_id, attempt, status, output, error, now))
        return ended is not None

    def ending_here(self, job_id: str) -> bool:
        """A result of the job is being stored by this process. Its end will be announced by `on_changed`
        (with the final view) once the statement returns, so the NOTIFY of that end need not wake anybody
        (see `JobEvents`)."""
        return job_id in self._ending

    async def _finish_many(
        self,
        results: list[_Finish],
        store: Callable[[list[_Finish]], Awaitable[list[Job | None]]] | None = None,
    ) -> list[Job | Exception | None]:
        """Ends many running attempts in one statement (`store`, by default FINISH or FINISH_MANY); each
        job's final view, or None when the attempt was no longer the job's running one. Every job of the
        batch is announced to `on_changed` here, in the writer, whatever became of its report: with its
        view when it ended, without it otherwise."""
        ids = [r.job_id for r in results]  # distinct: the group commit's key
        self._ending.update(ids)
        views: list[Job | None] = [None] * len(results)
        try:
            views = await (store or self._store_results)(results)
            return [*views]  # a copy, typed as the group commit's results (which may hold errors)
        finally:
            self._ending.difference_update(ids)
            for job_id, view in zip(ids, views, strict=True):
                self._changed(job_id, view)

    async def _store_results(self, results: list[_Finish]) -> list[Job | None]:
        if len(results) == 1:
            (r,) = results
            row = await self._one(
                FINISH, id=r.job_id, attempt=r.attempt, status=str(r.status), output=r.output, error=r.error,
                now=r.now,
            )  # fmt: skip
            return [None if row is None else _view(row, r.output)]
        return _views(results, await self._rows(FINISH_MANY, **_finish_params(results)))

    async def close(self) -> None:
        """Stops the writer (what it had not written yet is reported as cancelled)."""
        await self._writes.close()

    async def append_chunk(
        self, job_id: str, attempt: int, seq: int | None, data: bytes, now: datetime
    ) -> bool:
        """Stores chunk `seq` of a running attempt (idempotent), or, with `seq` None, the next one; False
        when the attempt is not running."""
        row = await self._one(APPEND_CHUNK, id=job_id, attempt=attempt, seq=seq, data=data, now=now)
        if row is not None:
            self._changed(job_id)
        return row is not None

    async def read_new_chunks(
        self, endpoint: str, job_id: str, now: datetime
    ) -> tuple[JobStatus, list[Chunk]] | None:
        rows = await self._rows(READ_NEW_CHUNKS, endpoint=endpoint, id=job_id, now=now)
        if not rows:
            return None
        return JobStatus(rows[0]["status"]), [
            Chunk(r["seq"], r["data"]) for r in rows if r["seq"] is not None
        ]

    async def chunks_since(
        self, endpoint: str, job_id: str, from_seq: int, now: datetime, limit: int = 500
    ) -> list[Chunk]:
        rows = await self._rows(
            CHUNKS_SINCE, endpoint=endpoint, id=job_id, from_seq=from_seq, now=now, limit=limit
        )
        return [Chunk(r["seq"], r["data"]) for r in rows]

    async def set_progress(self, job_id: str, attempt: int, data: bytes) -> bool:
        """Stores the latest progress update of a running attempt (shown as `output` while IN_PROGRESS)."""
        return await self._one(SET_PROGRESS, id=job_id, attempt=attempt, data=data) is not None

    async def extend_leases(self, worker_ids: list[str], lease_until: datetime) -> None:
        """Extends the leases of every running job of these workers, in one statement."""
        if worker_ids:
            await self._rows(EXTEND_LEASES, worker_ids=worker_ids, lease_until=lease_until)

    async def release_attempts(
        self, attempts: list[tuple[str, int]], reason: str, now: datetime
    ) -> list[tuple[str, JobStatus]]:
        """Requeues (or fails, when out of attempts) these running attempts; returns what became of them."""
        if not attempts:
            return []
        rows = await self._rows(
            RELEASE_ATTEMPTS,
            ids=[a[0] for a in attempts],
            attempts=[a[1] for a in attempts],
            reason=reason,
            now=now,
        )
        return [(row["id"], JobStatus(row["status"])) for row in rows]

    async def rescue_expired_leases(self, now: datetime, limit: int = 1000) -> list[tuple[str, JobStatus]]:
        """Requeues (or fails) running jobs whose lease ran out: their worker or its replica died."""
        rows = await self._rows(RESCUE_EXPIRED, reason="the worker stopped responding", now=now, limit=limit)
        return [(row["id"], JobStatus(row["status"])) for row in rows]

    async def time_out_jobs(self, now: datetime, limit: int = 1000) -> list[str]:
        """Ends running attempts past their execution deadline as TIMED_OUT; returns their job ids."""
        rows = await self._rows(TIME_OUT, now=now, limit=limit)
        return [row["id"] for row in rows]

    async def shorten_retention(self, endpoint: str, job_id: str, ttl_ms: int, now: datetime) -> None:
        await self._rows(SHORTEN_RETENTION, endpoint=endpoint, id=job_id, ttl_ms=ttl_ms, now=now)

    async def job_status(self, job_id: str) -> JobStatus | None:
        row = await self._one(JOB_STATUS, id=job_id)
        return None if row is None else JobStatus(row["status"])

    async def running_attempt(self, endpoint: str, job_id: str, worker_id: str) -> int | None:
        """The attempt this worker runs of the job, if it runs one (for workers that do not send attempts)."""
        row = await self._one(RUNNING_ATTEMPT, endpoint=endpoint, id=job_id, worker_id=worker_id)
        return None if row is None else int(row["attempt"])
