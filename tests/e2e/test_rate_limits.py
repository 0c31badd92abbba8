"""Rate limits per endpoint and operation in 10-second windows, the worker-based limit, the queue-size
rule, and limits shared by replicas: real HTTP and gRPC on loopback, a real Postgres, an injected clock
(windows pass by moving it, never by sleeping)."""

from __future__ import annotations

import grpc
import httpx
import pytest

from jobwire.server.clock import ManualClock
from jobwire.server.model import RateLimit
from jobwire.server.service.limits import LimitSettings
from jobwire.v1 import jobs_pb2
from server_fixtures import ENDPOINT, OTHER, Running, create_keys, running, start_jobwire
from worker_fixtures import RawWorker


async def purge(clocked: Running, key: str = "client", endpoint: str = ENDPOINT) -> httpx.Response:
    return await clocked.http.post(f"/v2/{endpoint}/purge-queue", headers=clocked.headers(key))


async def test_the_third_purge_in_a_window_is_429_with_retry_after_until_the_window_passes(
    clocked: Running, clock: ManualClock
) -> None:
    clock.advance(seconds=3)  # 3 s into a 10 s window
    assert [(await purge(clocked)).status_code for _ in range(2)] == [200, 200]
    refused = await purge(clocked)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "7"
    assert "rate limit of purge-queue" in refused.json()["error"]
    clock.advance(seconds=7)
    assert (await purge(clocked)).status_code == 200


async def test_grpc_calls_share_the_window_and_get_resource_exhausted_with_a_retry_after_trailer(
    clocked: Running,
) -> None:
    assert (await purge(clocked)).status_code == 200
    await clocked.stub.PurgeQueue(
        jobs_pb2.PurgeQueueRequest(endpoint_id=ENDPOINT), metadata=clocked.metadata()
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await clocked.stub.PurgeQueue(
            jobs_pb2.PurgeQueueRequest(endpoint_id=ENDPOINT), metadata=clocked.metadata()
        )
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert ("retry-after", "10") in tuple(caught.value.trailing_metadata() or ())


async def test_limits_are_per_endpoint_and_per_operation(clocked: Running) -> None:
    for _ in range(2):
        await purge(clocked)
    assert (await purge(clocked)).status_code == 429
    assert (await purge(clocked, key="other", endpoint=OTHER)).status_code == 200
    health = await clocked.http.get(f"/v2/{ENDPOINT}/health", headers=clocked.headers())
    assert health.status_code == 200


async def test_an_endpoint_override_applies_at_once_to_that_endpoint_only(clocked: Running) -> None:
    await clocked.server.admin.configure_endpoint(ENDPOINT, rate_limits={"status": RateLimit(3)})
    clocked.server.auth.forget()
    codes = [
        (await clocked.http.get(f"/v2/{ENDPOINT}/health", headers=clocked.headers())).status_code
        for _ in range(4)
    ]
    assert codes == [200, 200, 200, 429]
    # status, status-sync, stream and health share the `status` budget; run has its own.
    assert (await clocked.http.get(f"/v2/{ENDPOINT}/status/x", headers=clocked.headers())).status_code == 429
    run = await clocked.http.post(f"/v2/{ENDPOINT}/run", json={"input": 1}, headers=clocked.headers())
    assert run.status_code == 200
    other = await clocked.http.get(f"/v2/{OTHER}/health", headers=clocked.headers("other"))
    assert other.status_code == 200


async def test_running_workers_raise_the_limit_to_workers_times_per_worker(clocked: Running) -> None:
    await clocked.server.admin.configure_endpoint(
        ENDPOINT, rate_limits={"requests": RateLimit(2, per_worker=2)}
    )
    clocked.server.auth.forget()
    workers = [RawWorker(clocked.channel, clocked.keys["worker"], ENDPOINT, f"w{n}") for n in range(3)]
    for worker in workers:
        await worker.start()
    try:
        codes = [
            (await clocked.http.get(f"/v2/{ENDPOINT}/requests", headers=clocked.headers())).status_code
            for _ in range(7)
        ]
    finally:
        for worker in workers:
            worker.close()
    assert codes == [200] * 6 + [429]  # max(2, 3 workers x 2)


async def test_a_full_queue_refuses_new_jobs_until_it_drains(clocked: Running, clock: ManualClock) -> None:
    await clocked.server.admin.configure_endpoint(ENDPOINT, workers_max=0)  # max(50, 0 x 500) = 50
    clocked.server.auth.forget()
    for n in range(50):
        response = await clocked.http.post(
            f"/v2/{ENDPOINT}/run", json={"input": n}, headers=clocked.headers()
        )
        assert response.status_code == 200, (n, response.text)
    refused = await clocked.http.post(f"/v2/{ENDPOINT}/runsync", json={"input": 0}, headers=clocked.headers())
    assert refused.status_code == 429
    assert "queue of endpoint 'ep' is full: 50 jobs" in refused.json()["error"]
    assert refused.headers["retry-after"] == "1"
    assert (await purge(clocked)).json()["removed"] == 50
    clock.advance(seconds=1)
    accepted = await clocked.http.post(f"/v2/{ENDPOINT}/run", json={"input": 1}, headers=clocked.headers())
    assert accepted.status_code == 200


async def test_refusals_are_counted_in_metrics(clocked: Running) -> None:
    for _ in range(3):
        await purge(clocked)
    metrics = (await clocked.http.get("/metrics")).text
    assert 'jobwire_rate_limited_total{endpoint="ep",operation="purge-queue"} 1.0' in metrics


async def test_replicas_share_one_budget(database_url: str, clock: ManualClock) -> None:
    """Two replicas on one database: the clocked as a whole admits the limit, give or take the share a
    replica may count before it flushes."""
    settings = LimitSettings(flush_share=0.25)
    first = await start_jobwire(database_url, clock=clock, limit_settings=settings)
    second = await start_jobwire(database_url, clock=clock, limit_settings=settings)
    keys = await create_keys(first)
    await first.admin.configure_endpoint(ENDPOINT, rate_limits={"cancel": RateLimit(20)})
    async with running(first, keys) as a, running(second, keys) as b:
        admitted = 0
        for _ in range(40):
            for replica in (a, b):
                response = await replica.http.post(f"/v2/{ENDPOINT}/cancel/nope", headers=replica.headers())
                assert response.status_code in (404, 429)
                admitted += response.status_code == 404
        # Each replica may admit up to a quarter of the limit unflushed: 20 <= admitted <= 20 + 2 x 5.
        assert 20 <= admitted <= 30
        both_refuse = [
            (await r.http.post(f"/v2/{ENDPOINT}/cancel/nope", headers=r.headers())).status_code
            for r in (a, b)
        ]
        assert both_refuse == [429, 429]


async def test_a_disabled_limiter_admits_everything(database_url: str) -> None:
    server = await start_jobwire(database_url, limit_settings=LimitSettings(enabled=False))
    async with running(server) as clocked:
        assert {(await purge(clocked)).status_code for _ in range(5)} == {200}
