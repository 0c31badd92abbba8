"""the lease and deadline indexes hold the rows whose column is set

Revision ID: 4f1c8b2d6e07
Revises: 9d4c2a7e5b31
Create Date: 2026-11-25 09:00:00

`ix_jobs_lease` and `ix_jobs_deadline` were partial on `status = 'IN_PROGRESS'`. Every statement that
finds a running attempt by its id (a result, a batch of results, a chunk, a progress update) also says
`status = 'IN_PROGRESS'`, so the planner could answer it by walking a whole partial index, and it did:
statistics say few jobs run at once, so that walk looked cheaper than one probe of `uq_jobs_id` per
report. But the walk also visits the dead entry every ended attempt leaves behind until vacuum, so a
batch of results cost more with every job finished since the last vacuum (in a 20 s steady benchmark
the combined write averaged 0.66 ms of execution at 10k jobs in the table and 1.09 ms at 27k; 0.38-0.42
ms throughout with these indexes). Keyed on `lease_until IS NOT NULL` and `deadline_at IS NOT NULL`
(set when an attempt starts, cleared when it ends), the indexes still serve the reaper and the timeout
sweep, whose `lease_until < :now` and `deadline_at < :now` imply their predicates, and no longer match a
lookup by id.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "4f1c8b2d6e07"
down_revision: str | None = "9d4c2a7e5b31"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {"ix_jobs_lease": "lease_until", "ix_jobs_deadline": "deadline_at"}


def upgrade() -> None:
    for name, column in INDEXES.items():
        op.drop_index(name, table_name="jobs")
        op.create_index(name, "jobs", [column], postgresql_where=sa.text(f"{column} IS NOT NULL"))


def downgrade() -> None:
    for name, column in INDEXES.items():
        op.drop_index(name, table_name="jobs")
        op.create_index(name, "jobs", [column], postgresql_where=sa.text("status = 'IN_PROGRESS'"))
