"""Fixtures of the worker SDK tests: a fake WorkerService on a loopback gRPC server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from worker.fake_server import FakeWorkerService, serving


@pytest.fixture
def service() -> FakeWorkerService:
    return FakeWorkerService()


@pytest.fixture
async def address(service: FakeWorkerService) -> AsyncIterator[str]:
    async with serving(service) as bound:
        yield bound
