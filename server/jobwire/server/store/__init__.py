"""The job store: every SQL statement of jobwire lives in this package."""

from __future__ import annotations

from jobwire.server.store.admin import AdminStore
from jobwire.server.store.database import Database, create_engine, libpq_dsn
from jobwire.server.store.jobs import ClaimedJob, JobStore
from jobwire.server.store.listener import Listener
from jobwire.server.store.webhooks import Delivery, WebhookStore
from jobwire.server.store.workers import WorkerCounts, WorkerPresence, WorkerRow, WorkerStore

__all__ = [
    "AdminStore",
    "ClaimedJob",
    "Database",
    "Delivery",
    "JobStore",
    "Listener",
    "WebhookStore",
    "WorkerCounts",
    "WorkerPresence",
    "WorkerRow",
    "WorkerStore",
    "create_engine",
    "libpq_dsn",
]
