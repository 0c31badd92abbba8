"""payloads stored uncompressed (STORAGE EXTERNAL)

Revision ID: 5e7a0b3c1d2f
Revises: c4a7e1d90003
Create Date: 2026-11-24 05:05:00

Job inputs, outputs and stream chunks are written once, read a few times and dropped within their
retention. Postgres's default storage compresses large values with pglz first, which costs the write
most when nothing compresses: a 10 MB base64 input (an image, the usual large input of a GPU job) took
160 ms to insert compressed against 42-49 ms stored as it is; 10 MB of one repeated letter took about
50 ms either way (measured on the embedded Postgres 18; its build has no lz4). Values stay TOASTed out
of line, only uncompressed. Existing rows keep their storage.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "5e7a0b3c1d2f"
down_revision: str | None = "c4a7e1d90003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (("job_payloads", "data"), ("job_chunks", "data"))


def upgrade() -> None:
    for table, column in COLUMNS:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET STORAGE EXTERNAL")


def downgrade() -> None:
    for table, column in COLUMNS:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET STORAGE EXTENDED")
