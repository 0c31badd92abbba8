"""Per-endpoint settings: retention of results and their bounds, on a real server with an injected clock."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from jobwire.server.clock import ManualClock
from jobwire.server.errors import InvalidArgument, NotFound
from jobwire.server.model import RateLimit
from server_fixtures import ENDPOINT, OTHER, Running, running, start_jobwire


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def service(database_url: str, clock: ManualClock) -> AsyncIterator[Running]:
    async with running(await start_jobwire(database_url, clock=clock)) as jobwire:
        yield jobwire


async def ended_job(
    service: Running, operation: str = "run", endpoint: str = ENDPOINT, key: str = "client"
) -> str:
    """A job submitted by `operation` and cancelled at once (so it has ended)."""
    body = {"input": 1}
    url = f"/v2/{endpoint}/{operation}" + ("?wait=1000" if operation == "runsync" else "")
    job_id: str = (await service.http.post(url, json=body, headers=service.headers(key))).json()["id"]
    await service.http.post(f"/v2/{endpoint}/cancel/{job_id}", headers=service.headers(key))
    return job_id


async def readable(service: Running, job_id: str, endpoint: str = ENDPOINT, key: str = "client") -> bool:
    response = await service.http.get(f"/v2/{endpoint}/status/{job_id}", headers=service.headers(key))
    assert response.status_code in (200, 404)
    return response.status_code == 200


async def test_run_results_are_kept_for_the_endpoints_run_retention(
    service: Running, clock: ManualClock
) -> None:
    await service.server.admin.configure_endpoint(ENDPOINT, run_retention_ms=20_000)
    service.server.auth.forget()
    mine, theirs = await ended_job(service), await ended_job(service, endpoint=OTHER, key="other")
    clock.advance(seconds=19)
    assert await readable(service, mine)
    clock.advance(seconds=2)
    assert not await readable(service, mine)
    assert await readable(service, theirs, endpoint=OTHER, key="other")  # the default: 30 minutes
    clock.advance(minutes=30)
    assert not await readable(service, theirs, endpoint=OTHER, key="other")


async def test_runsync_results_are_kept_for_the_endpoints_sync_retention(
    service: Running, clock: ManualClock
) -> None:
    assert (await service.server.admin.get_endpoint(ENDPOINT)).sync_retention_ms == 60_000
    await service.server.admin.configure_endpoint(ENDPOINT, sync_retention_ms=15_000)
    service.server.auth.forget()
    job_id = await ended_job(service, "runsync")
    assert job_id.startswith("sync-")
    clock.advance(seconds=14)
    assert await readable(service, job_id)
    clock.advance(seconds=2)
    assert not await readable(service, job_id)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"run_retention_ms": 5_000}, "run_retention_ms must be between 10000 and"),
        ({"sync_retention_ms": 2 * 86_400_000}, "sync_retention_ms must be between"),
        ({"execution_timeout_ms": 1_000}, "execution_timeout_ms must be between 5000"),
        ({"workers_max": -1}, "workers_max must be between 0"),
        ({"rate_limits": {"runn": RateLimit(5)}}, "'runn' is not a rate-limited operation"),
        ({"rate_limits": {"run": RateLimit(0)}}, "the rate limit of run must be 1 to"),
        ({"colour": 1}, "'colour' is not an endpoint setting"),
    ],
)
async def test_out_of_range_settings_are_refused_with_the_reason(
    service: Running, settings: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        await service.server.admin.configure_endpoint(ENDPOINT, **settings)


async def test_settings_survive_a_read_back_and_unknown_endpoints_are_not_found(service: Running) -> None:
    await service.server.admin.configure_endpoint(
        ENDPOINT, workers_max=4, rate_limits={"run": RateLimit(10, per_worker=3)}
    )
    endpoint = await service.server.admin.get_endpoint(ENDPOINT)
    assert (endpoint.workers_max, dict(endpoint.rate_limits)) == (4, {"run": RateLimit(10, 3)})
    await service.server.admin.configure_endpoint(ENDPOINT, workers_max=None)
    assert (await service.server.admin.get_endpoint(ENDPOINT)).workers_max is None
    with pytest.raises(NotFound):
        await service.server.admin.configure_endpoint("nope", workers_max=1)
