"""A running jobwire (real gRPC and HTTP servers on loopback, on a database of the test's own), with an
endpoint `ep` and keys of every kind, plus a second endpoint `other` to prove isolation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import httpx
import pytest

from jobwire.server.app import GRPC_OPTIONS, JobwireServer
from jobwire.server.clock import ManualClock
from jobwire.server.config import Settings
from jobwire.server.model import JobStatus, Role
from jobwire.server.service.jobs import JobSettings
from jobwire.server.store import JobStore
from jobwire.v1 import jobs_pb2_grpc

ENDPOINT = "ep"
OTHER = "other"


@dataclass
class Running:
    server: JobwireServer
    #: API keys by name: client, worker, admin (of `ep`) and other (a client key of `other`).
    keys: dict[str, str]
    http: httpx.AsyncClient
    channel: grpc.aio.Channel
    stub: jobs_pb2_grpc.JobServiceAsyncStub

    def metadata(self, key: str = "client") -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.keys[key]}"),)

    def headers(self, key: str = "client") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[key]}"}


async def start_jobwire(
    database_url: str, job_settings: JobSettings | None = None, **options: Any
) -> JobwireServer:
    """A started server on ports chosen by the OS; `options` go to JobwireServer (clock, settings...)."""
    settings = Settings(http_addr="127.0.0.1:0", grpc_addr="127.0.0.1:0", migrate=False)
    server = JobwireServer(settings, database_url, job_settings=job_settings, **options)
    await server.start()
    return server


async def create_keys(server: JobwireServer) -> dict[str, str]:
    """Endpoints `ep` and `other` (if missing) and a key of every kind."""
    for name in (ENDPOINT, OTHER):
        await server.admin.ensure_endpoint(name)
    return {
        "client": (await server.admin.create_key(Role.CLIENT, ENDPOINT)).secret,
        "worker": (await server.admin.create_key(Role.WORKER, ENDPOINT)).secret,
        "admin": (await server.admin.create_key(Role.ADMIN, None)).secret,
        "other": (await server.admin.create_key(Role.CLIENT, OTHER)).secret,
    }


@asynccontextmanager
async def running(server: JobwireServer, keys: dict[str, str] | None = None) -> AsyncIterator[Running]:
    """Clients of a started server; stops the server at the end."""
    try:
        keys = keys or await create_keys(server)
        async with (
            httpx.AsyncClient(base_url=server.http_url, timeout=30) as http,
            grpc.aio.insecure_channel(server.grpc_target, options=GRPC_OPTIONS) as channel,
        ):
            yield Running(server, keys, http, channel, jobs_pb2_grpc.JobServiceStub(channel))
    finally:
        await server.stop(grace=0)


@pytest.fixture
async def jobwire(database_url: str) -> AsyncIterator[Running]:
    async with running(await start_jobwire(database_url)) as service:
        yield service


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def clocked(database_url: str, clock: ManualClock) -> AsyncIterator[Running]:
    """`jobwire` on the test's `clock`: time passes when the test moves it."""
    async with running(await start_jobwire(database_url, clock=clock)) as service:
        yield service


# ---- helpers shared by the REST tests ----------------------------------------------------------------


async def claim_and(
    jobwire: Running, status: JobStatus | None, output: bytes | None = None, error: str | None = None
) -> str:
    """Plays a worker through the store: claims the oldest job and, unless status is None, ends it."""
    store = JobStore(jobwire.server.database)
    now = datetime.now(UTC)
    (claimed,) = await store.claim_jobs(ENDPOINT, "w-test", 1, now + timedelta(seconds=30), now)
    if status is not None:
        await store.finish_job(claimed.job.id, claimed.job.attempt, status, output, error, datetime.now(UTC))
    return claimed.job.id


async def run(jobwire: Running, body: object = None, key: str = "client") -> httpx.Response:
    return await jobwire.http.post(
        f"/v2/{ENDPOINT}/run",
        json={"input": {"prompt": "hi"}} if body is None else body,
        headers=jobwire.headers(key),
    )
