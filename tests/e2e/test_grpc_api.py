"""The JobService over a real gRPC channel on loopback: the same contract as REST, with gRPC statuses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from jobwire.server.model import JobStatus
from jobwire.server.store import JobStore
from jobwire.v1 import job_pb2, jobs_pb2
from server_fixtures import ENDPOINT, Running

MB = 1024 * 1024


def submission(raw: bytes = b'{"prompt": "hi"}') -> job_pb2.JobSubmission:
    return job_pb2.JobSubmission(input=raw)


async def test_run_status_cancel(jobwire: Running) -> None:
    run = await jobwire.stub.Run(
        jobs_pb2.RunRequest(endpoint_id=ENDPOINT, job=submission()), metadata=jobwire.metadata()
    )
    assert run.job.status == job_pb2.IN_QUEUE and run.job.id
    status = await jobwire.stub.Status(
        jobs_pb2.StatusRequest(endpoint_id=ENDPOINT, job_id=run.job.id), metadata=jobwire.metadata()
    )
    assert status.job == run.job
    cancel = await jobwire.stub.Cancel(
        jobs_pb2.CancelRequest(endpoint_id=ENDPOINT, job_id=run.job.id), metadata=jobwire.metadata()
    )
    assert cancel.job.status == job_pb2.CANCELLED


async def test_errors_carry_grpc_status_codes(jobwire: Running) -> None:
    cases: list[tuple[Awaitable[object], grpc.StatusCode]] = [
        (
            jobwire.stub.Status(
                jobs_pb2.StatusRequest(endpoint_id=ENDPOINT, job_id="nope"), metadata=jobwire.metadata()
            ),
            grpc.StatusCode.NOT_FOUND,
        ),
        (jobwire.stub.Health(jobs_pb2.HealthRequest(endpoint_id=ENDPOINT)), grpc.StatusCode.UNAUTHENTICATED),
        (
            jobwire.stub.Health(
                jobs_pb2.HealthRequest(endpoint_id=ENDPOINT), metadata=jobwire.metadata("other")
            ),
            grpc.StatusCode.PERMISSION_DENIED,
        ),
        (
            jobwire.stub.Health(jobs_pb2.HealthRequest(endpoint_id="unknown"), metadata=jobwire.metadata()),
            grpc.StatusCode.NOT_FOUND,
        ),
        (
            jobwire.stub.Run(
                jobs_pb2.RunRequest(endpoint_id=ENDPOINT, job=job_pb2.JobSubmission()),
                metadata=jobwire.metadata(),
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            jobwire.stub.Run(
                jobs_pb2.RunRequest(endpoint_id=ENDPOINT, job=submission(b'"' + b"x" * (10 * MB) + b'"')),
                metadata=jobwire.metadata(),
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ]
    for call, code in cases:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        assert raised.value.code() == code
        assert raised.value.details()


async def test_purge_and_health_count_real_jobs(jobwire: Running) -> None:
    for _ in range(3):
        await jobwire.stub.Run(
            jobs_pb2.RunRequest(endpoint_id=ENDPOINT, job=submission()), metadata=jobwire.metadata()
        )
    health = await jobwire.stub.Health(
        jobs_pb2.HealthRequest(endpoint_id=ENDPOINT), metadata=jobwire.metadata()
    )
    assert health.jobs.in_queue == 3
    purge = await jobwire.stub.PurgeQueue(
        jobs_pb2.PurgeQueueRequest(endpoint_id=ENDPOINT), metadata=jobwire.metadata()
    )
    assert (purge.removed, purge.status) == (3, "completed")


async def test_run_sync_respects_the_call_deadline(jobwire: Running) -> None:
    response = await jobwire.stub.RunSync(
        jobs_pb2.RunSyncRequest(endpoint_id=ENDPOINT, job=submission(), wait=300_000),
        metadata=jobwire.metadata(),
        timeout=1.5,
    )
    assert response.job.status == job_pb2.IN_QUEUE and response.job.id.startswith("sync-")


async def test_stream_replays_then_follows_and_ends_with_the_final_view(jobwire: Running) -> None:
    run = await jobwire.stub.Run(
        jobs_pb2.RunRequest(endpoint_id=ENDPOINT, job=submission()), metadata=jobwire.metadata()
    )
    store = JobStore(jobwire.server.database)
    now = datetime.now(UTC)
    (claimed,) = await store.claim_jobs(ENDPOINT, "w", 1, now + timedelta(seconds=30), now)
    attempt = claimed.job.attempt
    await store.append_chunk(run.job.id, attempt, 1, b'"a"', now)
    call = jobwire.stub.Stream(
        jobs_pb2.StreamRequest(endpoint_id=ENDPOINT, job_id=run.job.id), metadata=jobwire.metadata()
    )
    first = await call.read()
    assert isinstance(first, jobs_pb2.StreamResponse)
    assert (first.chunk.seq, first.chunk.output) == (1, b'"a"')

    async def produce() -> None:
        await store.append_chunk(run.job.id, attempt, 2, b'"b"', datetime.now(UTC))
        await store.finish_job(
            run.job.id, attempt, JobStatus.COMPLETED, b'["a", "b"]', None, datetime.now(UTC)
        )

    producing = asyncio.create_task(produce())
    rest: list[jobs_pb2.StreamResponse] = []
    while (message := await call.read()) is not grpc.aio.EOF:
        assert isinstance(message, jobs_pb2.StreamResponse)
        rest.append(message)
    await producing
    assert [m.chunk.output for m in rest if m.HasField("chunk")] == [b'"b"']
    assert rest[-1].done.status == job_pb2.COMPLETED and rest[-1].done.output == b'["a", "b"]'
    # A reader that starts late, from chunk 2, gets the same tail.
    late = jobwire.stub.Stream(
        jobs_pb2.StreamRequest(endpoint_id=ENDPOINT, job_id=run.job.id, from_seq=2),
        metadata=jobwire.metadata(),
    )
    assert [m.WhichOneof("event") async for m in late] == ["chunk", "done"]


async def test_health_checking_and_reflection_are_served(jobwire: Running) -> None:
    checks = health_pb2_grpc.HealthStub(jobwire.channel)
    for service in ("", "jobwire.v1.JobService"):
        answer = await checks.Check(health_pb2.HealthCheckRequest(service=service))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    reflect = reflection_pb2_grpc.ServerReflectionStub(jobwire.channel)

    async def ask() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    names = [
        s.name
        async for answer in reflect.ServerReflectionInfo(ask())
        for s in answer.list_services_response.service
    ]
    assert "jobwire.v1.JobService" in names
