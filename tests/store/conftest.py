"""Fixtures of the store tests: an engine on the test's own database, a manual clock, and a job store
with endpoints `ep` and `other`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from jobwire.server.clock import ManualClock
from jobwire.server.store import AdminStore, JobStore, create_engine
from store_fixtures import EP, OTHER


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def store(engine: AsyncEngine, clock: ManualClock) -> AsyncIterator[JobStore]:
    admin = AdminStore(engine)
    for name in (EP, OTHER):
        await admin.create_endpoint(name, clock.now(), {"execution_timeout_ms": 600_000, "max_attempts": 3})
    store = JobStore(engine)
    yield store
    await store.close()
