"""Helpers of the store tests (their fixtures are in tests/store/conftest.py)."""

from __future__ import annotations

from jobwire.server.model import NewJob, Priority

EP = "ep"
OTHER = "other"


def new_job(
    job_id: str, *, endpoint: str = EP, low: bool = False, ttl_ms: int = 86_400_000, **fields: object
) -> NewJob:
    """A queued-to-be job of `endpoint` with ordinary settings; `fields` override any NewJob field."""
    values: dict[str, object] = dict(
        id=job_id,
        endpoint=endpoint,
        input=b'{"n": 1}',
        webhook=None,
        s3_config=None,
        priority=Priority.LOW if low else Priority.NORMAL,
        execution_timeout_ms=600_000,
        ttl_ms=ttl_ms,
        retention_ms=1_800_000,
        max_attempts=3,
        sync=False,
    )
    values.update(fields)
    return NewJob(**values)  # type: ignore[arg-type]
