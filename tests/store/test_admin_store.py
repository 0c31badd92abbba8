"""Endpoints in the admin store: a taken name is AlreadyExists, and only a taken name is."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError

from jobwire.server.clock import ManualClock
from jobwire.server.errors import AlreadyExists
from jobwire.server.store import AdminStore, Database

SETTINGS = {"execution_timeout_ms": 600_000, "max_attempts": 3}


async def test_a_taken_name_is_already_exists(db: Database, clock: ManualClock) -> None:
    admin = AdminStore(db)
    await admin.create_endpoint("taken", clock.now(), SETTINGS)
    with pytest.raises(AlreadyExists, match="'taken' already exists"):
        await admin.create_endpoint("taken", clock.now(), SETTINGS)


async def test_a_missing_setting_is_not_reported_as_a_taken_name(db: Database, clock: ManualClock) -> None:
    admin = AdminStore(db)
    with pytest.raises(IntegrityError, match="not-null"):
        await admin.create_endpoint("new", clock.now(), {"max_attempts": 3})
    assert await admin.get_endpoint("new") is None
