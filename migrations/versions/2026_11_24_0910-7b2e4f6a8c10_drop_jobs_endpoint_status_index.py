"""drop ix_jobs_endpoint_status

Revision ID: 7b2e4f6a8c10
Revises: 5e7a0b3c1d2f
Create Date: 2026-11-24 09:10:00

The index on (endpoint, status) served the health counts only, and they read every alive row of the
endpoint from the heap anyway (aliveness is `expires_at` and `retain_until`, which it does not hold):
`ix_jobs_endpoint_seq` finds the same rows. Its cost was on the hot path: every job's insert and every
status change (a non-HOT update) added an entry to it, two per job, all under a handful of equal keys.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "7b2e4f6a8c10"
down_revision: str | None = "5e7a0b3c1d2f"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_jobs_endpoint_status", table_name="jobs")


def downgrade() -> None:
    op.create_index("ix_jobs_endpoint_status", "jobs", ["endpoint", "status"])
