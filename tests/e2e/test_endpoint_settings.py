"""Per-endpoint settings: retention of results and their bounds, on a real server with an injected clock."""

from __future__ import annotations

import pytest

from jobwire.server.clock import ManualClock
from jobwire.server.errors import InvalidArgument, NotFound
from jobwire.server.model import RateLimit
from server_fixtures import ENDPOINT, OTHER, Running


async def ended_job(
    clocked: Running, operation: str = "run", endpoint: str = ENDPOINT, key: str = "client"
) -> str:
    """A job submitted by `operation` and cancelled at once (so it has ended)."""
    body = {"input": 1}
    url = f"/v2/{endpoint}/{operation}" + ("?wait=1000" if operation == "runsync" else "")
    job_id: str = (await clocked.http.post(url, json=body, headers=clocked.headers(key))).json()["id"]
    await clocked.http.post(f"/v2/{endpoint}/cancel/{job_id}", headers=clocked.headers(key))
    return job_id


async def readable(clocked: Running, job_id: str, endpoint: str = ENDPOINT, key: str = "client") -> bool:
    response = await clocked.http.get(f"/v2/{endpoint}/status/{job_id}", headers=clocked.headers(key))
    assert response.status_code in (200, 404)
    return response.status_code == 200


async def test_run_results_are_kept_for_the_endpoints_run_retention(
    clocked: Running, clock: ManualClock
) -> None:
    await clocked.server.admin.configure_endpoint(ENDPOINT, run_retention_ms=20_000)
    clocked.server.auth.forget()
    mine, theirs = await ended_job(clocked), await ended_job(clocked, endpoint=OTHER, key="other")
    clock.advance(seconds=19)
    assert await readable(clocked, mine)
    clock.advance(seconds=2)
    assert not await readable(clocked, mine)
    assert await readable(clocked, theirs, endpoint=OTHER, key="other")  # the default: 30 minutes
    clock.advance(minutes=30)
    assert not await readable(clocked, theirs, endpoint=OTHER, key="other")


async def test_runsync_results_are_kept_for_the_endpoints_sync_retention(
    clocked: Running, clock: ManualClock
) -> None:
    assert (await clocked.server.admin.get_endpoint(ENDPOINT)).sync_retention_ms == 60_000
    await clocked.server.admin.configure_endpoint(ENDPOINT, sync_retention_ms=15_000)
    clocked.server.auth.forget()
    job_id = await ended_job(clocked, "runsync")
    assert job_id.startswith("sync-")
    clock.advance(seconds=14)
    assert await readable(clocked, job_id)
    clock.advance(seconds=2)
    assert not await readable(clocked, job_id)


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
    clocked: Running, settings: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        await clocked.server.admin.configure_endpoint(ENDPOINT, **settings)


async def test_settings_survive_a_read_back_and_unknown_endpoints_are_not_found(clocked: Running) -> None:
    await clocked.server.admin.configure_endpoint(
        ENDPOINT, workers_max=4, rate_limits={"run": RateLimit(10, per_worker=3)}
    )
    endpoint = await clocked.server.admin.get_endpoint(ENDPOINT)
    assert (endpoint.workers_max, dict(endpoint.rate_limits)) == (4, {"run": RateLimit(10, 3)})
    await clocked.server.admin.configure_endpoint(ENDPOINT, workers_max=None)
    assert (await clocked.server.admin.get_endpoint(ENDPOINT)).workers_max is None
    with pytest.raises(NotFound):
        await clocked.server.admin.configure_endpoint("nope", workers_max=1)
