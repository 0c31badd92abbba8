"""Fixtures of the store tests: the test's own database, a manual clock, and a job store
with endpoints `ep` and `other`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from jobwire.server.clock import ManualClock
from jobwire.server.store import AdminStore, Database, JobStore
from store_fixtures import EP, OTHER


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    db = Database(database_url)
    yield db
    await db.dispose()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def store(db: Database, clock: ManualClock) -> AsyncIterator[JobStore]:
    admin = AdminStore(db)
    for name in (EP, OTHER):
        await admin.create_endpoint(name, clock.now(), {"execution_timeout_ms": 600_000, "max_attempts": 3})
    store = JobStore(db)
    yield store
    await store.close()
