"""The job store: every SQL statement of jobwire lives in this package."""

from __future__ import annotations

from jobwire.server.store.admin import AdminStore
from jobwire.server.store.database import create_engine, libpq_dsn
from jobwire.server.store.jobs import ClaimedJob, JobStore
from jobwire.server.store.listener import Listener

__all__ = ["AdminStore", "ClaimedJob", "JobStore", "Listener", "create_engine", "libpq_dsn"]
