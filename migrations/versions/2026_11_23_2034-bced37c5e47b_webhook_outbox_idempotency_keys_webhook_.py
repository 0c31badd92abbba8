"""webhook outbox, idempotency keys, webhook secrets

Revision ID: bced37c5e47b
Revises: 914e539fd714
Create Date: 2026-11-23 20:34:21.307338
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "bced37c5e47b"
down_revision: str | None = "914e539fd714"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("job_seq", sa.BigInteger(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_seq"], ["jobs.seq"], name=op.f("fk_webhook_deliveries_job_seq_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
    )
    op.create_index(
        "ix_webhook_deliveries_due",
        "webhook_deliveries",
        ["next_attempt_at"],
        unique=False,
        postgresql_where=sa.text("delivered_at IS NULL AND failed_at IS NULL"),
    )
    op.create_index(op.f("ix_webhook_deliveries_job_seq"), "webhook_deliveries", ["job_seq"], unique=False)
    # Existing endpoints get a random secret; new ones get theirs from the application.
    op.add_column(
        "endpoints",
        sa.Column(
            "webhook_secret",
            sa.Text(),
            server_default=sa.text("md5(random()::text || clock_timestamp()::text)"),
            nullable=False,
        ),
    )
    op.alter_column("endpoints", "webhook_secret", server_default=None)
    op.add_column("jobs", sa.Column("idempotency_key", sa.Text(), nullable=True))
    op.create_index(
        "uq_jobs_endpoint_idempotency_key",
        "jobs",
        ["endpoint", "idempotency_key"],
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index(
        "uq_jobs_endpoint_idempotency_key",
        table_name="jobs",
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    op.drop_column("jobs", "idempotency_key")
    op.drop_column("endpoints", "webhook_secret")
    op.drop_index(op.f("ix_webhook_deliveries_job_seq"), table_name="webhook_deliveries")
    op.drop_index(
        "ix_webhook_deliveries_due",
        table_name="webhook_deliveries",
        postgresql_where=sa.text("delivered_at IS NULL AND failed_at IS NULL"),
    )
    op.drop_table("webhook_deliveries")
