"""`/v2/{ep}/requests` (an endpoint's jobs, newest first, in pages) and `/v1/endpoints`, over real HTTP
and gRPC against a real Postgres."""

from __future__ import annotations

import grpc
import pytest

from jobwire.server.model import JobStatus
from jobwire.v1 import job_pb2, jobs_pb2
from server_fixtures import ENDPOINT, OTHER, Running, claim_and, run


async def submit(jobwire: Running, count: int) -> list[str]:
    return [(await run(jobwire, {"input": {"n": n}})).json()["id"] for n in range(count)]


async def test_requests_pages_through_every_job_newest_first(jobwire: Running) -> None:
    submitted = await submit(jobwire, 7)
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        response = await jobwire.http.get(
            f"/v2/{ENDPOINT}/requests", params=params, headers=jobwire.headers()
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["requests"]) <= 3
        seen += [item["id"] for item in body["requests"]]
        pages += 1
        cursor = body.get("nextCursor")
        if not cursor:
            break
    assert seen == list(reversed(submitted))
    assert pages == 3


async def test_a_listed_job_has_its_state_and_timings_but_no_payload(jobwire: Running) -> None:
    (queued,) = await submit(jobwire, 1)
    response = await jobwire.http.get(f"/v2/{ENDPOINT}/requests", headers=jobwire.headers())
    (item,) = response.json()["requests"]
    assert item["id"] == queued and item["status"] == "IN_QUEUE" and item["kind"] == "run"
    assert "createdAt" in item and "startedAt" not in item and "input" not in item
    done = await claim_and(jobwire, JobStatus.COMPLETED, output=b'{"big": "output"}')
    response = await jobwire.http.get(f"/v2/{ENDPOINT}/requests", headers=jobwire.headers())
    (item,) = response.json()["requests"]
    assert item["id"] == done and item["status"] == "COMPLETED"
    assert {"startedAt", "finishedAt", "delayTime", "executionTime"} <= set(item)
    assert "output" not in item


async def test_requests_filter_by_status(jobwire: Running) -> None:
    await submit(jobwire, 3)
    failed = await claim_and(jobwire, JobStatus.FAILED, error="boom")
    completed = await claim_and(jobwire, JobStatus.COMPLETED, output=b"1")
    response = await jobwire.http.get(
        f"/v2/{ENDPOINT}/requests?status=FAILED&status=COMPLETED", headers=jobwire.headers()
    )
    assert [item["id"] for item in response.json()["requests"]] == [completed, failed]
    response = await jobwire.http.get(f"/v2/{ENDPOINT}/requests?status=IN_QUEUE", headers=jobwire.headers())
    assert [item["status"] for item in response.json()["requests"]] == ["IN_QUEUE"]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("limit=0", "limit must be between 1 and 500"),
        ("limit=501", "limit must be between 1 and 500"),
        ("cursor=not-a-cursor", "cursor is not a nextCursor"),
        ("status=SLEEPING", "SLEEPING"),
    ],
)
async def test_bad_listing_parameters_are_400_with_a_message(
    jobwire: Running, query: str, message: str
) -> None:
    response = await jobwire.http.get(f"/v2/{ENDPOINT}/requests?{query}", headers=jobwire.headers())
    assert response.status_code == 400
    assert message in response.json()["error"]


async def test_requests_of_another_endpoint_are_refused(jobwire: Running) -> None:
    await submit(jobwire, 1)
    response = await jobwire.http.get(f"/v2/{ENDPOINT}/requests", headers=jobwire.headers("other"))
    assert response.status_code == 403
    response = await jobwire.http.get(f"/v2/{OTHER}/requests", headers=jobwire.headers("other"))
    assert response.status_code == 200 and response.json()["requests"] == []


async def test_requests_over_grpc(jobwire: Running) -> None:
    submitted = await submit(jobwire, 2)
    response = await jobwire.stub.ListRequests(
        jobs_pb2.ListRequestsRequest(endpoint_id=ENDPOINT, limit=1), metadata=jobwire.metadata()
    )
    assert [r.id for r in response.requests] == [submitted[-1]] and response.next_cursor
    response = await jobwire.stub.ListRequests(
        jobs_pb2.ListRequestsRequest(
            endpoint_id=ENDPOINT, cursor=response.next_cursor, status=[job_pb2.IN_QUEUE]
        ),
        metadata=jobwire.metadata(),
    )
    assert [r.id for r in response.requests] == [submitted[0]] and not response.next_cursor


async def test_endpoints_lists_all_for_an_admin_key_and_its_own_for_a_client_key(jobwire: Running) -> None:
    await submit(jobwire, 2)
    response = await jobwire.http.get("/v1/endpoints", headers=jobwire.headers("admin"))
    assert response.status_code == 200
    by_name = {e["name"]: e["health"] for e in response.json()["endpoints"]}
    assert set(by_name) == {ENDPOINT, OTHER}
    assert by_name[ENDPOINT]["jobs"]["inQueue"] == 2 and by_name[OTHER]["jobs"]["inQueue"] == 0
    assert "workers" in by_name[ENDPOINT]
    response = await jobwire.http.get("/v1/endpoints", headers=jobwire.headers("other"))
    assert [e["name"] for e in response.json()["endpoints"]] == [OTHER]


async def test_endpoints_refuses_worker_keys_and_missing_keys(jobwire: Running) -> None:
    assert (await jobwire.http.get("/v1/endpoints", headers=jobwire.headers("worker"))).status_code == 403
    assert (await jobwire.http.get("/v1/endpoints")).status_code == 401
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await jobwire.stub.ListEndpoints(jobs_pb2.ListEndpointsRequest())
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
