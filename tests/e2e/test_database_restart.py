"""A database that goes away and comes back: requests get a clear 503 / UNAVAILABLE meanwhile, nothing is
lost, and the service recovers by itself (pool pre-ping, LISTEN reconnect) once Postgres is back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest

from jobwire.server.app import JobwireServer
from jobwire.server.embedded import EmbeddedPostgres, fast_unsafe_settings
from jobwire.server.model import Role
from jobwire.server.service.jobs import JobSettings
from jobwire.server.store.migrate import upgrade
from jobwire.v1 import job_pb2, jobs_pb2, jobs_pb2_grpc
from server_fixtures import ENDPOINT, start_jobwire


@pytest.fixture
async def own_postgres(tmp_path: Path) -> AsyncIterator[EmbeddedPostgres]:
    """A Postgres of this test's own: stopping the session's server would break other tests."""
    pg = EmbeddedPostgres(tmp_path / "pg", settings=fast_unsafe_settings())
    await asyncio.to_thread(pg.start)
    try:
        yield pg
    finally:
        await asyncio.to_thread(pg.stop)


async def test_requests_fail_cleanly_while_postgres_is_down_and_recover(
    own_postgres: EmbeddedPostgres,
) -> None:
    await asyncio.to_thread(upgrade, own_postgres.url)
    # No fallback polling: a waiter can only wake through LISTEN/NOTIFY, which must have reconnected.
    server: JobwireServer = await start_jobwire(own_postgres.url, JobSettings(fallback_poll_s=3600))
    try:
        await server.admin.create_endpoint(ENDPOINT)
        key = (await server.admin.create_key(Role.CLIENT, ENDPOINT)).secret
        headers = {"Authorization": f"Bearer {key}"}
        async with (
            httpx.AsyncClient(base_url=server.http_url, timeout=30) as http,
            grpc.aio.insecure_channel(server.grpc_target) as channel,
        ):
            first = (await http.post(f"/v2/{ENDPOINT}/run", json={"input": 1}, headers=headers)).json()["id"]

            await asyncio.to_thread(own_postgres.stop)
            down = await http.post(f"/v2/{ENDPOINT}/run", json={"input": 2}, headers=headers)
            assert down.status_code == 503
            assert "unavailable" in down.json()["error"]
            status = await http.get(f"/v2/{ENDPOINT}/status/{first}", headers=headers)
            assert status.status_code == 503
            stub = jobs_pb2_grpc.JobServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.Run(
                    jobs_pb2.RunRequest(endpoint_id=ENDPOINT, job=job_pb2.JobSubmission(input=b"3")),
                    metadata=(("authorization", key),),
                )
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE

            await asyncio.to_thread(own_postgres.start)
            again = await http.post(f"/v2/{ENDPOINT}/run", json={"input": 4}, headers=headers)
            assert again.status_code == 200
            kept = await http.get(f"/v2/{ENDPOINT}/status/{first}", headers=headers)
            assert kept.json() == {"id": first, "status": "IN_QUEUE"}
            # The LISTEN connection comes back too: a cancel wakes a status-sync waiter at once.
            await asyncio.wait_for(server._listener.connected.wait(), timeout=15)
            waiting = asyncio.create_task(
                http.get(f"/v2/{ENDPOINT}/status-sync/{first}?wait=60000", headers=headers)
            )
            while server.events.waiting == 0:
                await asyncio.sleep(0.01)
            await http.post(f"/v2/{ENDPOINT}/cancel/{first}", headers=headers)
            assert (await waiting).json()["status"] == "CANCELLED"
    finally:
        await server.stop(grace=0)
