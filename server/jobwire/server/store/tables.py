"""The schema, as SQLAlchemy Core tables. Alembic's env.py reads `metadata`; a test checks that the
migrations produce exactly this.

Layout (see docs/architecture notes in the README):
- `jobs` is the hot row: state, attempt, lease and timing columns only, so lifecycle UPDATEs stay small.
- `job_payloads` holds the JSON documents (input, output, progress, s3Config) as bytes, apart from the
  hot row, so a 10 MB input is written once and never rewritten by a state change. Small inputs and
  outputs (up to `store.jobs.INLINE_MAX` bytes) are the exception: they live in the job's row, which
  saves a row, an index entry and their WAL per document.
- `job_chunks` holds streamed output, numbered per job.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

# Deterministic constraint and index names: they are part of the schema's API (migrations name them).
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

JOB_STATUSES = ("IN_QUEUE", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")
ROLES = ("client", "worker", "admin")
PAYLOAD_KINDS = ("input", "output", "progress", "s3_config")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


endpoints = Table(
    "endpoints",
    metadata,
    Column("name", Text, primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("execution_timeout_ms", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    # Runpod's health reports how many retries an endpoint has seen; kept as a running counter.
    Column("retried_total", BigInteger, nullable=False, server_default=text("0")),
    # Key of the HMAC that signs this endpoint's webhook deliveries (Standard Webhooks, as Replicate).
    Column("webhook_secret", Text, nullable=False),
    # How long ended jobs stay readable: /run jobs, and /runsync jobs (which `?wait` may extend).
    Column("run_retention_ms", Integer, nullable=False, server_default=text("1800000")),
    Column("sync_retention_ms", Integer, nullable=False, server_default=text("60000")),
    # Runpod's workersMax, for its admission rule (429 once the queue exceeds 50 and workersMax x 500).
    # NULL: no queue-size limit, since a self-hosted endpoint has no autoscaler whose size bounds it.
    Column("workers_max", Integer, nullable=True),
    # Per-operation rate-limit overrides, {"run": {"limit": 1000, "perWorker": 50}, ...}; see
    # jobwire.server.service.limits for the defaults and the rules.
    Column("rate_limits", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("prefix", Text, nullable=False),
    # SHA-256 of the whole key. Keys carry 190 bits of randomness, so a fast hash is enough (a slow
    # password hash would only add latency to every request).
    Column("key_hash", LargeBinary, nullable=False, unique=True),
    Column("role", Text, nullable=False),
    Column("endpoint", Text, ForeignKey("endpoints.name", ondelete="CASCADE"), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    CheckConstraint(_in("role", ROLES), name="role"),
    CheckConstraint("role = 'admin' OR endpoint IS NOT NULL", name="scoped"),
    Index(None, "endpoint"),
)

jobs = Table(
    "jobs",
    metadata,
    # A bigint key keeps the claim index and the payload tables compact and local; the public id
    # (Runpod-style string) has its own unique index.
    Column("seq", BigInteger, Identity(), primary_key=True),
    Column("id", Text, nullable=False, unique=True),
    Column("endpoint", Text, ForeignKey("endpoints.name", ondelete="CASCADE"), nullable=False),
    Column("status", Text, nullable=False),
    Column("priority", SmallInteger, nullable=False),
    Column("attempt", Integer, nullable=False, server_default=text("0")),
    Column("max_attempts", Integer, nullable=False),
    Column("retries", Integer, nullable=False, server_default=text("0")),
    Column("sync", Boolean, nullable=False),
    Column("webhook", Text, nullable=True),
    Column("execution_timeout_ms", Integer, nullable=False),
    Column("ttl_ms", Integer, nullable=False),
    # How long the result stays readable once the job ends.
    Column("retention_ms", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # When the job last entered the queue (submit, retry, requeue): delayTime counts from here.
    Column("queued_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    # The TTL deadline: past it the job is gone in any state.
    Column("expires_at", DateTime(timezone=True), nullable=False),
    # Set when the job ends: past it the result is gone.
    Column("retain_until", DateTime(timezone=True), nullable=True),
    Column("lease_until", DateTime(timezone=True), nullable=True),
    # When the running attempt passes its execution timeout.
    Column("deadline_at", DateTime(timezone=True), nullable=True),
    Column("worker_id", Text, nullable=True),
    Column("error", Text, nullable=True),
    # Runpod's /stream reads are destructive: the last chunk a REST reader has been given.
    Column("stream_read_seq", Integer, nullable=False, server_default=text("0")),
    # A client's Idempotency-Key: a repeated submit with it returns this job while it is retained.
    Column("idempotency_key", Text, nullable=True),
    # The input and the output when small (else they are in job_payloads). Stored PLAIN (set by the
    # migration): never compressed or moved out of line, as the statements keep them small.
    Column("input", LargeBinary, nullable=True),
    Column("output", LargeBinary, nullable=True),
    CheckConstraint(_in("status", JOB_STATUSES), name="status"),
    # The claim: queued jobs of one endpoint, normal before low priority, oldest first. Partial, so
    # its size follows the queue, not the history.
    Index(
        "ix_jobs_claim",
        "endpoint",
        "priority",
        "seq",
        postgresql_where=text("status = 'IN_QUEUE'"),
    ),
    # The reaper: running attempts by lease deadline. The timeout sweep: by execution deadline. Both
    # columns are set when an attempt starts and cleared when it ends. Partial on them, not on
    # `status = 'IN_PROGRESS'`: with that predicate the planner answered lookups of a running attempt by
    # id (every result) with a walk of the whole index, dead entries of every ended attempt included
    # (see migration 4f1c8b2d6e07).
    Index("ix_jobs_lease", "lease_until", postgresql_where=text("lease_until IS NOT NULL")),
    Index("ix_jobs_deadline", "deadline_at", postgresql_where=text("deadline_at IS NOT NULL")),
    # `/requests`: an endpoint's jobs newest first, in keyset pages; the health counts find an endpoint's
    # jobs through it too (no index on status: every status change would add an entry to it).
    Index("ix_jobs_endpoint_seq", "endpoint", "seq"),
    # Pruning of ended jobs and of expired ones.
    Index("ix_jobs_retain_until", "retain_until", postgresql_where=text("retain_until IS NOT NULL")),
    Index("ix_jobs_expires_at", "expires_at"),
    Index(
        "uq_jobs_endpoint_idempotency_key",
        "endpoint",
        "idempotency_key",
        unique=True,
        postgresql_where=text("idempotency_key IS NOT NULL"),
    ),
)

# The webhook outbox: a row is written in the same statement that ends the job, so a crash between the
# commit and the delivery loses nothing; senders on any replica claim due rows with SKIP LOCKED.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("job_seq", BigInteger, ForeignKey("jobs.seq", ondelete="CASCADE"), nullable=False),
    Column("url", Text, nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("delivered_at", DateTime(timezone=True), nullable=True),
    Column("failed_at", DateTime(timezone=True), nullable=True),
    Column("last_error", Text, nullable=True),
    Index(
        "ix_webhook_deliveries_due",
        "next_attempt_at",
        postgresql_where=text("delivered_at IS NULL AND failed_at IS NULL"),
    ),
    Index(None, "job_seq"),
)

# Connected workers, for health counts across replicas. A row lives while its stream (or, for Runpod
# HTTP workers, its polling) does; last_seen_at is refreshed in batches, so a replica that died leaves
# rows that age out of the counts.
workers = Table(
    "workers",
    metadata,
    Column("id", Text, primary_key=True),
    Column("endpoint", Text, ForeignKey("endpoints.name", ondelete="CASCADE"), nullable=False),
    Column("session_id", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("slots", Integer, nullable=False),
    Column("busy", Integer, nullable=False, server_default=text("0")),
    Column("draining", Boolean, nullable=False, server_default=text("false")),
    Column("sdk_version", Text, nullable=False, server_default=text("''")),
    # JSON list of {name, uuid, memoryBytes}.
    Column("accelerators", Text, nullable=False, server_default=text("'[]'")),
    Column("connected_at", DateTime(timezone=True), nullable=False),
    Column("last_seen_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("kind IN ('grpc', 'http')", name="kind"),
    Index(None, "endpoint"),
)

job_payloads = Table(
    "job_payloads",
    metadata,
    Column("job_seq", BigInteger, ForeignKey("jobs.seq", ondelete="CASCADE"), nullable=False),
    Column("kind", Text, nullable=False),
    Column("data", LargeBinary, nullable=False),
    PrimaryKeyConstraint("job_seq", "kind"),
    CheckConstraint(_in("kind", PAYLOAD_KINDS), name="kind"),
)

job_chunks = Table(
    "job_chunks",
    metadata,
    Column("job_seq", BigInteger, ForeignKey("jobs.seq", ondelete="CASCADE"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("job_seq", "seq"),
)

# Rate-limit windows shared by the replicas: each adds its local count to its window's row in batches
# (one upsert per flush, not per request) and reads back the total of every replica.
rate_windows = Table(
    "rate_windows",
    metadata,
    Column("endpoint", Text, ForeignKey("endpoints.name", ondelete="CASCADE"), nullable=False),
    Column("operation", Text, nullable=False),
    Column("window_start", DateTime(timezone=True), nullable=False),
    Column("count", BigInteger, nullable=False),
    PrimaryKeyConstraint("endpoint", "operation", "window_start"),
    Index(None, "window_start"),
)
