"""create endpoints keys jobs payloads chunks workers

Revision ID: 914e539fd714
Revises:
Create Date: 2026-11-23 19:20:53.442522
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "914e539fd714"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "endpoints",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("execution_timeout_ms", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("retried_total", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_endpoints")),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("prefix", sa.Text(), nullable=False),
        sa.Column("key_hash", sa.LargeBinary(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("endpoint", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("role = 'admin' OR endpoint IS NOT NULL", name=op.f("ck_api_keys_scoped")),
        sa.CheckConstraint("role IN ('client', 'worker', 'admin')", name=op.f("ck_api_keys_role")),
        sa.ForeignKeyConstraint(
            ["endpoint"], ["endpoints.name"], name=op.f("fk_api_keys_endpoint_endpoints"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_index(op.f("ix_api_keys_endpoint"), "api_keys", ["endpoint"], unique=False)
    op.create_table(
        "jobs",
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("endpoint", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("priority", sa.SmallInteger(), nullable=False),
        sa.Column("attempt", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("retries", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("sync", sa.Boolean(), nullable=False),
        sa.Column("webhook", sa.Text(), nullable=True),
        sa.Column("execution_timeout_ms", sa.Integer(), nullable=False),
        sa.Column("ttl_ms", sa.Integer(), nullable=False),
        sa.Column("retention_ms", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retain_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("worker_id", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("stream_read_seq", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.CheckConstraint(
            "status IN ('IN_QUEUE', 'IN_PROGRESS', 'COMPLETED', 'FAILED', 'CANCELLED', 'TIMED_OUT')",
            name=op.f("ck_jobs_status"),
        ),
        sa.ForeignKeyConstraint(
            ["endpoint"], ["endpoints.name"], name=op.f("fk_jobs_endpoint_endpoints"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_jobs")),
        sa.UniqueConstraint("id", name=op.f("uq_jobs_id")),
    )
    op.create_index(
        "ix_jobs_claim",
        "jobs",
        ["endpoint", "priority", "seq"],
        unique=False,
        postgresql_where=sa.text("status = 'IN_QUEUE'"),
    )
    op.create_index(
        "ix_jobs_deadline",
        "jobs",
        ["deadline_at"],
        unique=False,
        postgresql_where=sa.text("status = 'IN_PROGRESS'"),
    )
    op.create_index("ix_jobs_endpoint_status", "jobs", ["endpoint", "status"], unique=False)
    op.create_index("ix_jobs_expires_at", "jobs", ["expires_at"], unique=False)
    op.create_index(
        "ix_jobs_lease",
        "jobs",
        ["lease_until"],
        unique=False,
        postgresql_where=sa.text("status = 'IN_PROGRESS'"),
    )
    op.create_index(
        "ix_jobs_retain_until",
        "jobs",
        ["retain_until"],
        unique=False,
        postgresql_where=sa.text("retain_until IS NOT NULL"),
    )
    op.create_table(
        "workers",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("endpoint", sa.Text(), nullable=False),
        sa.Column("session_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("slots", sa.Integer(), nullable=False),
        sa.Column("busy", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("draining", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("sdk_version", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("accelerators", sa.Text(), server_default=sa.text("'[]'"), nullable=False),
        sa.Column("connected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('grpc', 'http')", name=op.f("ck_workers_kind")),
        sa.ForeignKeyConstraint(
            ["endpoint"], ["endpoints.name"], name=op.f("fk_workers_endpoint_endpoints"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workers")),
    )
    op.create_index(op.f("ix_workers_endpoint"), "workers", ["endpoint"], unique=False)
    op.create_table(
        "job_chunks",
        sa.Column("job_seq", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_seq"], ["jobs.seq"], name=op.f("fk_job_chunks_job_seq_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("job_seq", "seq", name=op.f("pk_job_chunks")),
    )
    op.create_table(
        "job_payloads",
        sa.Column("job_seq", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.CheckConstraint(
            "kind IN ('input', 'output', 'progress', 's3_config')", name=op.f("ck_job_payloads_kind")
        ),
        sa.ForeignKeyConstraint(
            ["job_seq"], ["jobs.seq"], name=op.f("fk_job_payloads_job_seq_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("job_seq", "kind", name=op.f("pk_job_payloads")),
    )


def downgrade() -> None:
    op.drop_table("job_payloads")
    op.drop_table("job_chunks")
    op.drop_index(op.f("ix_workers_endpoint"), table_name="workers")
    op.drop_table("workers")
    op.drop_index(
        "ix_jobs_retain_until", table_name="jobs", postgresql_where=sa.text("retain_until IS NOT NULL")
    )
    op.drop_index("ix_jobs_lease", table_name="jobs", postgresql_where=sa.text("status = 'IN_PROGRESS'"))
    op.drop_index("ix_jobs_expires_at", table_name="jobs")
    op.drop_index("ix_jobs_endpoint_status", table_name="jobs")
    op.drop_index("ix_jobs_deadline", table_name="jobs", postgresql_where=sa.text("status = 'IN_PROGRESS'"))
    op.drop_index("ix_jobs_claim", table_name="jobs", postgresql_where=sa.text("status = 'IN_QUEUE'"))
    op.drop_table("jobs")
    op.drop_index(op.f("ix_api_keys_endpoint"), table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("endpoints")
