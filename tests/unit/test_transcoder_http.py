"""The transcoder end to end: real HTTP on loopback (uvicorn + httpx) over the JobService contract,
served by an in-memory servicer through the same RPC table the gRPC server uses."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest

from jobwire.server import errors
from jobwire.server.api.context import CallContext, metadata_value
from jobwire.server.api.registry import rpcs_of
from jobwire.server.api.transcoder import Transcoder
from jobwire.v1 import job_pb2, jobs_pb2
from unit.transcoder_fixtures import serve

SERVICE = jobs_pb2.DESCRIPTOR.services_by_name["JobService"]
TEN_MIB = 10 * 1024 * 1024


class MemoryJobs:
    """Every JobService RPC over a dict. Records each request with the authorization it carried."""

    def __init__(self) -> None:
        self.jobs: dict[str, job_pb2.Job] = {}
        self.chunks: dict[str, list[bytes]] = {}
        self.seen: list[tuple[str, Any, str | None]] = []
        self.reset()

    def reset(self) -> None:
        self.entered = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.stream_closed = asyncio.Event()

    def _see(self, name: str, request: Any, context: CallContext) -> None:
        self.seen.append((name, request, metadata_value(context, "authorization")))

    def _job(self, request: Any) -> job_pb2.Job:
        job = self.jobs.get(request.job_id)
        if job is None:
            raise errors.NotFound(f"job {request.job_id} not found")
        return job

    async def _hold(self) -> None:
        self.entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise

    def add(
        self,
        job_id: str,
        status: job_pb2.JobStatus.ValueType = job_pb2.IN_QUEUE,
        chunks: tuple[bytes, ...] = (),
    ) -> None:
        self.jobs[job_id] = job_pb2.Job(id=job_id, status=status)
        self.chunks[job_id] = list(chunks)

    async def run(self, request: jobs_pb2.RunRequest, context: CallContext) -> jobs_pb2.RunResponse:
        self._see("run", request, context)
        if request.job.webhook == "too-large":
            raise errors.PayloadTooLarge("input is larger than 10 bytes")
        if request.endpoint_id == "secure" and metadata_value(context, "authorization") is None:
            raise errors.Unauthenticated()
        job_id = f"job-{len(self.jobs) + 1}"
        self.add(job_id)
        return jobs_pb2.RunResponse(job=self.jobs[job_id])

    async def run_stream(
        self, requests: AsyncIterator[jobs_pb2.RunStreamRequest], context: CallContext
    ) -> AsyncIterator[jobs_pb2.RunStreamResponse]:
        # gRPC only: the transcoder has no route to it (a stream of requests has no JSON body).
        raise AssertionError("RunStream reached over HTTP")
        yield jobs_pb2.RunStreamResponse()

    async def run_sync(
        self, request: jobs_pb2.RunSyncRequest, context: CallContext
    ) -> jobs_pb2.RunSyncResponse:
        self._see("run_sync", request, context)
        if request.job.webhook == "hold":
            await self._hold()
        job = job_pb2.Job(id="sync-1", status=job_pb2.COMPLETED, output=request.job.input, delay_time=0)
        job.execution_time = request.wait
        return jobs_pb2.RunSyncResponse(job=job)

    async def status(self, request: jobs_pb2.StatusRequest, context: CallContext) -> jobs_pb2.StatusResponse:
        self._see("status", request, context)
        return jobs_pb2.StatusResponse(job=self._job(request))

    async def status_sync(
        self, request: jobs_pb2.StatusSyncRequest, context: CallContext
    ) -> jobs_pb2.StatusSyncResponse:
        self._see("status_sync", request, context)
        return jobs_pb2.StatusSyncResponse(job=self._job(request))

    async def stream(self, request: jobs_pb2.StreamRequest, context: CallContext) -> AsyncIterator[Any]:
        self._see("stream", request, context)
        try:
            job = self._job(request)
            for seq, output in enumerate(self.chunks[job.id], start=1):
                if seq >= request.from_seq:
                    yield jobs_pb2.StreamResponse(chunk=jobs_pb2.Chunk(seq=seq, output=output))
            if job.id == "failing":
                raise errors.Unavailable("the store went away")
            if job.id == "endless":
                await self._hold()
            yield jobs_pb2.StreamResponse(done=job)
        finally:
            self.stream_closed.set()

    async def read_stream(
        self, request: jobs_pb2.ReadStreamRequest, context: CallContext
    ) -> jobs_pb2.ReadStreamResponse:
        self._see("read_stream", request, context)
        job = self._job(request)
        outputs, self.chunks[job.id] = self.chunks[job.id], []
        stream = [job_pb2.StreamOutput(output=output) for output in outputs]
        return jobs_pb2.ReadStreamResponse(id=job.id, status=job.status, stream=stream)

    async def cancel(self, request: jobs_pb2.CancelRequest, context: CallContext) -> jobs_pb2.CancelResponse:
        self._see("cancel", request, context)
        if request.job_id == "crash":
            raise RuntimeError("a bug in the handler")
        job = self._job(request)
        job.status = job_pb2.CANCELLED
        return jobs_pb2.CancelResponse(job=job)

    async def retry(self, request: jobs_pb2.RetryRequest, context: CallContext) -> jobs_pb2.RetryResponse:
        self._see("retry", request, context)
        job = self._job(request)
        if job.status not in (job_pb2.FAILED, job_pb2.TIMED_OUT):
            raise errors.InvalidState("only a failed job can be retried")
        return jobs_pb2.RetryResponse(job=job)

    async def purge_queue(
        self, request: jobs_pb2.PurgeQueueRequest, context: CallContext
    ) -> jobs_pb2.PurgeQueueResponse:
        self._see("purge_queue", request, context)
        return jobs_pb2.PurgeQueueResponse(removed=0, status="completed")

    async def health(self, request: jobs_pb2.HealthRequest, context: CallContext) -> jobs_pb2.HealthResponse:
        self._see("health", request, context)
        if request.endpoint_id == "busy":
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down")
        return jobs_pb2.HealthResponse(jobs=jobs_pb2.JobCounts(), workers=jobs_pb2.WorkerCounts())

    async def list_requests(
        self, request: jobs_pb2.ListRequestsRequest, context: CallContext
    ) -> jobs_pb2.ListRequestsResponse:
        self._see("list_requests", request, context)
        return jobs_pb2.ListRequestsResponse()

    async def list_endpoints(
        self, request: jobs_pb2.ListEndpointsRequest, context: CallContext
    ) -> jobs_pb2.ListEndpointsResponse:
        self._see("list_endpoints", request, context)
        return jobs_pb2.ListEndpointsResponse()


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[tuple[MemoryJobs, str]]:
    jobs = MemoryJobs()
    async with serve(Transcoder(rpcs_of(SERVICE, jobs))) as url:
        yield jobs, url


@pytest.fixture
def jobs(server: tuple[MemoryJobs, str]) -> MemoryJobs:
    server[0].reset()
    return server[0]


@pytest.fixture
async def client(server: tuple[MemoryJobs, str]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server[1]) as http:
        yield http


def last(jobs: MemoryJobs, name: str) -> Any:
    return next(request for rpc, request, _ in reversed(jobs.seen) if rpc == name)


def assert_json(response: httpx.Response, status: int, body: Any) -> None:
    assert (response.status_code, response.json()) == (status, body)
    assert response.headers["content-type"] == "application/json"


# ---- success ----------------------------------------------------------------------------------------


async def test_run_reaches_the_handler_with_raw_input(client: httpx.AsyncClient, jobs: MemoryJobs) -> None:
    body = (
        b'{"input": {"prompt": "hi", "seed": 12345678901234567890123, "z": [1, 2.5]},'
        b' "policy": {"executionTimeout": 60000, "ttl": 3600000}, "webhook": "http://hook"}'
    )
    # Workers and some clients send JSON under a form content type: it must not matter.
    response = await client.post(
        "/v2/ep/run", content=body, headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    job_id = response.json()["id"]
    assert response.json() == {"id": job_id, "status": "IN_QUEUE"}
    request = last(jobs, "run")
    assert request.endpoint_id == "ep"
    # The input is the client's JSON text, byte for byte (never parsed into Python objects).
    assert request.job.input == b'{"prompt": "hi", "seed": 12345678901234567890123, "z": [1, 2.5]}'
    assert (request.job.policy.execution_timeout, request.job.policy.ttl) == (60000, 3600000)
    assert not request.job.policy.HasField("low_priority")
    assert request.job.webhook == "http://hook"


async def test_runsync_takes_wait_from_the_query_and_job_from_the_body(
    client: httpx.AsyncClient, jobs: MemoryJobs
) -> None:
    response = await client.post("/v2/ep/runsync?wait=5000&job.webhook=ignored", json={"input": {"n": 2**70}})
    request = last(jobs, "run_sync")
    assert request.HasField("wait") and request.wait == 5000
    assert request.job.webhook == ""
    assert response.status_code == 200
    assert b'"output":{"n":1180591620717411303424}' in response.content
    assert json.loads(response.content) == {
        "id": "sync-1",
        "status": "COMPLETED",
        "delayTime": 0,
        "executionTime": 5000,
        "output": {"n": 2**70},
    }


async def test_status_by_get_and_post(client: httpx.AsyncClient, jobs: MemoryJobs) -> None:
    jobs.add("s1", job_pb2.IN_PROGRESS)
    expected = {"id": "s1", "status": "IN_PROGRESS"}
    assert_json(await client.get("/v2/ep/status/s1"), 200, expected)
    assert_json(await client.post("/v2/ep/status/s1", json={}), 200, expected)
    assert_json(await client.post("/v2/ep/status/s1", content=b"not json"), 200, expected)
    assert_json(await client.get("/v2/ep/status-sync/s1?wait=1000"), 200, expected)
    assert last(jobs, "status_sync").wait == 1000
    assert (last(jobs, "status").endpoint_id, last(jobs, "status").job_id) == ("ep", "s1")


async def test_percent_encoded_path_values(client: httpx.AsyncClient, jobs: MemoryJobs) -> None:
    jobs.add("a/b c")
    assert_json(await client.get("/v2/e%20p/status/a%2Fb%20c"), 200, {"id": "a/b c", "status": "IN_QUEUE"})
    assert last(jobs, "status").endpoint_id == "e p"


async def test_empty_body_means_an_empty_object(client: httpx.AsyncClient, jobs: MemoryJobs) -> None:
    response = await client.post("/v2/ep/run", content=b"", headers={"content-type": "application/json"})
    assert response.status_code == 200
    assert last(jobs, "run").HasField("job")
    assert last(jobs, "run").job.input == b""


async def test_body_is_ignored_without_a_body_rule(client: httpx.AsyncClient, jobs: MemoryJobs) -> None:
    jobs.add("c1")
    response = await client.post("/v2/ep/cancel/c1", json={})
    assert_json(response, 200, {"id": "c1", "status": "CANCELLED"})
    jobs.add("c2")
    assert (await client.post("/v2/ep/cancel/c2", content=b"{{{")).status_code == 200


async def test_zero_values_are_printed(client: httpx.AsyncClient) -> None:
    assert_json(await client.post("/v2/ep/purge-queue"), 200, {"removed": 0, "status": "completed"})
    assert_json(
        await client.get("/v2/ep/health"),
        200,
        {
            "jobs": {"completed": 0, "failed": 0, "inProgress": 0, "inQueue": 0, "retried": 0},
            "workers": {
                "idle": 0,
                "initializing": 0,
                "ready": 0,
                "running": 0,
                "throttled": 0,
                "unhealthy": 0,
            },
        },
    )


async def test_read_stream_drains_chunks(client: httpx.AsyncClient, jobs: MemoryJobs) -> None:
    jobs.add("r1", job_pb2.IN_PROGRESS, (b'{"t":"a"}', b'"b"'))
    first = await client.get("/v2/ep/stream/r1")
    assert (
        first.content == b'{"id":"r1","status":"IN_PROGRESS","stream":[{"output":{"t":"a"}},{"output":"b"}]}'
    )
    assert_json(
        await client.post("/v2/ep/stream/r1"), 200, {"id": "r1", "status": "IN_PROGRESS", "stream": []}
    )


async def test_authorization_is_forwarded_untouched(client: httpx.AsyncClient, jobs: MemoryJobs) -> None:
    for value in ("Bearer k", "k"):
        response = await client.post("/v2/secure/run", json={"input": 1}, headers={"authorization": value})
        assert response.status_code == 200
        assert jobs.seen[-1][2] == value


# ---- refusals and errors ----------------------------------------------------------------------------


async def test_unknown_path_and_wrong_method(client: httpx.AsyncClient) -> None:
    assert_json(await client.get("/v2/ep/nothing"), 404, {"error": "not found"})
    response = await client.delete("/v2/ep/health")
    assert_json(response, 405, {"error": "method DELETE not allowed"})
    assert response.headers["allow"] == "GET"


async def test_413_by_content_length(client: httpx.AsyncClient, jobs: MemoryJobs) -> None:
    calls = len(jobs.seen)
    body = b'{"input": "' + b"x" * (TEN_MIB - 12) + b'"}'
    assert len(body) == TEN_MIB + 1
    response = await client.post("/v2/ep/run", content=body)
    assert_json(response, 413, {"error": f"request body is larger than {TEN_MIB} bytes"})
    assert len(jobs.seen) == calls
    assert (await client.post("/v2/ep/run", json={"input": 1})).status_code == 200  # same connection


async def test_413_while_reading_a_chunked_body(client: httpx.AsyncClient, jobs: MemoryJobs) -> None:
    calls = len(jobs.seen)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"input": "'
        for _ in range(11):
            yield b"x" * (1024 * 1024)
        yield b'"}'

    response = await client.post("/v2/ep/run", content=chunks())
    assert "content-length" not in response.request.headers
    assert_json(response, 413, {"error": f"request body is larger than {TEN_MIB} bytes"})
    assert len(jobs.seen) == calls


async def test_a_body_just_under_the_limit_is_accepted(client: httpx.AsyncClient, jobs: MemoryJobs) -> None:
    body = b'{"input": "' + b"x" * (TEN_MIB - 13) + b'"}'
    assert (await client.post("/v2/ep/run", content=body)).status_code == 200
    assert len(last(jobs, "run").job.input) == TEN_MIB - 11


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b'{"input": ', "malformed JSON body: "),
        (b"[1, 2]", "request body must be a JSON object"),
        (b'{"policy": {"ttl": "soon"}}', "ttl"),
        (b'{"policy": {"ttl": -1}}', "ttl"),
    ],
)
async def test_bad_bodies_are_400(client: httpx.AsyncClient, body: bytes, error: str) -> None:
    response = await client.post("/v2/ep/run", content=body)
    assert response.status_code == 400
    assert error in response.json()["error"]


async def test_bad_query_values_are_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/v2/ep/runsync?wait=soon", json={})
    assert response.status_code == 400
    assert "'wait'" in response.json()["error"]


async def test_errors_map_to_http_statuses(client: httpx.AsyncClient, jobs: MemoryJobs) -> None:
    assert_json(await client.get("/v2/ep/status/nope"), 404, {"error": "job nope not found"})
    jobs.add("q1")
    assert_json(await client.post("/v2/ep/retry/q1"), 400, {"error": "only a failed job can be retried"})
    assert_json(await client.get("/v2/busy/health"), 429, {"error": "slow down"})
    too_large = await client.post("/v2/ep/run", json={"webhook": "too-large"})
    assert_json(too_large, 413, {"error": "input is larger than 10 bytes"})  # the handler's override


async def test_401_asks_for_a_bearer_token(client: httpx.AsyncClient) -> None:
    response = await client.post("/v2/secure/run", json={})
    assert_json(response, 401, {"error": errors.Unauthenticated().message})
    assert response.headers["www-authenticate"] == "Bearer"


async def test_unexpected_exceptions_are_500_and_logged(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    response = await client.post("/v2/ep/cancel/crash")
    assert_json(response, 500, {"error": "internal error"})
    (record,) = [r for r in caplog.records if r.name == "jobwire.http"]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None and "a bug in the handler" in str(record.exc_info[1])


# ---- streaming --------------------------------------------------------------------------------------


async def test_stream_is_ndjson_with_a_result_per_message(
    client: httpx.AsyncClient, jobs: MemoryJobs
) -> None:
    jobs.add("st1", job_pb2.COMPLETED, (b'{"a":1}', b"[2]", b'"three"'))
    response = await client.get("/v2/ep/stream/st1:follow?from_seq=2")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.content.split(b"\n") == [
        b'{"result":{"chunk":{"seq":2,"output":[2]}}}',
        b'{"result":{"chunk":{"seq":3,"output":"three"}}}',
        b'{"result":{"done":{"id":"st1","status":"COMPLETED"}}}',
        b"",
    ]
    assert last(jobs, "stream").from_seq == 2


async def test_stream_error_before_the_first_message_is_a_plain_error(client: httpx.AsyncClient) -> None:
    assert_json(await client.get("/v2/ep/stream/missing:follow"), 404, {"error": "job missing not found"})


async def test_stream_error_after_the_first_message_is_in_band(
    client: httpx.AsyncClient, jobs: MemoryJobs
) -> None:
    jobs.add("failing", job_pb2.IN_PROGRESS, (b"1",))
    response = await client.get("/v2/ep/stream/failing:follow")
    assert response.status_code == 200
    lines = [json.loads(line) for line in response.content.splitlines()]
    assert lines == [
        {"result": {"chunk": {"seq": 1, "output": 1}}},
        {"error": {"code": 14, "message": "the store went away"}},
    ]


async def test_stream_is_flushed_per_message_and_stops_when_the_client_leaves(
    client: httpx.AsyncClient, jobs: MemoryJobs, caplog: pytest.LogCaptureFixture
) -> None:
    jobs.add("endless", job_pb2.IN_PROGRESS, (b'{"n":1}',))
    async with client.stream("GET", "/v2/ep/stream/endless:follow") as response:
        lines = response.aiter_lines()
        # The handler is still waiting for more output, so this line was flushed on its own.
        assert await anext(lines) == '{"result":{"chunk":{"seq":1,"output":{"n":1}}}}'
        await asyncio.wait_for(jobs.entered.wait(), 5)
    await asyncio.wait_for(jobs.cancelled.wait(), 5)
    await asyncio.wait_for(jobs.stream_closed.wait(), 5)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_a_waiting_unary_call_is_cancelled_when_the_client_leaves(
    client: httpx.AsyncClient, jobs: MemoryJobs, caplog: pytest.LogCaptureFixture
) -> None:
    call = asyncio.create_task(client.post("/v2/ep/runsync", json={"webhook": "hold"}))
    await asyncio.wait_for(jobs.entered.wait(), 5)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await asyncio.wait_for(jobs.cancelled.wait(), 5)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
