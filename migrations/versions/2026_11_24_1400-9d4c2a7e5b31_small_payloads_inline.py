"""small inputs and outputs in the job's row

Revision ID: 9d4c2a7e5b31
Revises: 7b2e4f6a8c10
Create Date: 2026-11-24 14:00:00

A job's input and output each took a row of `job_payloads`: an insert, a primary-key entry and their WAL
for every job, the largest part of what Postgres spent per job besides the job's own row. Documents up to
`INLINE_MAX` bytes (768) now go in `jobs.input` and `jobs.output`; larger ones stay in `job_payloads`, so
a state change never rewrites a large document. The columns are PLAIN: the statements keep them small,
and Postgres is not to try compressing them whenever a row crosses its toast threshold. Existing jobs
keep their payloads where they are: reads take the inline value first, then `job_payloads`.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "9d4c2a7e5b31"
down_revision: str | None = "7b2e4f6a8c10"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("input", "output")


def upgrade() -> None:
    for column in COLUMNS:
        op.add_column("jobs", sa.Column(column, sa.LargeBinary(), nullable=True))
        op.execute(f"ALTER TABLE jobs ALTER COLUMN {column} SET STORAGE PLAIN")


def downgrade() -> None:
    # The inline documents go back to job_payloads first, so nothing is lost.
    for column in COLUMNS:
        op.execute(
            f"INSERT INTO job_payloads (job_seq, kind, data) SELECT seq, '{column}', {column} FROM jobs "
            f"WHERE {column} IS NOT NULL ON CONFLICT (job_seq, kind) DO UPDATE SET data = EXCLUDED.data"
        )
        op.drop_column("jobs", column)
