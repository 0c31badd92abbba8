"""RunStream over a real gRPC channel, raw and through `jobwire.client.Submitter`: each submission is
answered as Run would answer it, in request order, and a refused one does not end the stream."""

from __future__ import annotations

import asyncio
import json
import socket
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from jobwire.client import SubmissionRefused, Submitter
from jobwire.server.api import jobs as jobs_api
from jobwire.server.store import JobStore
from jobwire.v1 import job_pb2, jobs_pb2
from server_fixtures import ENDPOINT, OTHER, Running


def run_request(raw: bytes, endpoint: str = ENDPOINT, key: str = "") -> jobs_pb2.RunRequest:
    return jobs_pb2.RunRequest(
        endpoint_id=endpoint, job=job_pb2.JobSubmission(input=raw), idempotency_key=key
    )


async def outcomes_of(
    call: grpc.aio.StreamStreamCall[jobs_pb2.RunStreamRequest, jobs_pb2.RunStreamResponse], count: int
) -> list[jobs_pb2.RunOutcome]:
    outcomes: list[jobs_pb2.RunOutcome] = []
    async for response in call:
        outcomes += response.outcomes
        if len(outcomes) >= count:
            break
    return outcomes


async def stored_inputs(jobwire: Running) -> dict[str, object]:
    """The decoded input of every queued job of ENDPOINT, by job id (claimed from the store: the job's
    view does not carry its input)."""
    now = datetime.now(UTC)
    claimed = await JobStore(jobwire.server.database).claim_jobs(
        ENDPOINT, "test", 1000, now + timedelta(seconds=30), now
    )
    return {c.job.id: json.loads(c.input) for c in claimed}


async def test_answers_come_in_request_order_and_refusals_do_not_end_the_stream(jobwire: Running) -> None:
    call = jobwire.stub.RunStream(metadata=jobwire.metadata())
    await call.write(
        jobs_pb2.RunStreamRequest(
            requests=[
                run_request(b'{"n": 1}'),
                run_request(b'{"n": 2}', endpoint="unknown"),
                run_request(b""),
                run_request(b'{"n": 4}'),
                run_request(b'{"n": 5}', endpoint=OTHER),
            ]
        )
    )
    await call.write(jobs_pb2.RunStreamRequest(requests=[run_request(b'{"n": 6}')]))
    await call.done_writing()
    outcomes = await outcomes_of(call, 6)

    assert [o.WhichOneof("outcome") for o in outcomes] == ["job", "error", "error", "job", "error", "job"]
    assert [o.error.code for o in outcomes if o.HasField("error")] == [
        grpc.StatusCode.NOT_FOUND.value[0],
        grpc.StatusCode.INVALID_ARGUMENT.value[0],
        grpc.StatusCode.PERMISSION_DENIED.value[0],
    ]
    assert all(o.error.message for o in outcomes if o.HasField("error"))
    jobs = [o.job for o in outcomes if o.HasField("job")]
    assert all(job.status == job_pb2.IN_QUEUE for job in jobs)
    inputs = await stored_inputs(jobwire)
    assert [inputs[job.id] for job in jobs] == [{"n": 1}, {"n": 4}, {"n": 6}]
    assert await call.code() == grpc.StatusCode.OK


async def test_a_wrong_key_refuses_each_submission(jobwire: Running) -> None:
    call = jobwire.stub.RunStream(metadata=(("authorization", "Bearer jw_wrong"),))
    await call.write(jobs_pb2.RunStreamRequest(requests=[run_request(b"{}"), run_request(b"{}")]))
    await call.done_writing()
    outcomes = await outcomes_of(call, 2)
    assert [o.error.code for o in outcomes] == [grpc.StatusCode.UNAUTHENTICATED.value[0]] * 2


async def test_the_submitter_gives_each_caller_its_own_job(jobwire: Running) -> None:
    async with Submitter(jobwire.channel, jobwire.keys["client"]) as submitter:
        jobs = await asyncio.gather(*(submitter.submit(run_request(b'{"i": %d}' % i)) for i in range(60)))
    assert len({job.id for job in jobs}) == 60
    assert all(job.status == job_pb2.IN_QUEUE for job in jobs)
    inputs = await stored_inputs(jobwire)
    assert [inputs[job.id] for job in jobs] == [{"i": i} for i in range(60)]


async def test_the_submitter_raises_a_refusal_for_its_caller_only(jobwire: Running) -> None:
    async with Submitter(jobwire.channel, jobwire.keys["client"]) as submitter:
        results = await asyncio.gather(
            submitter.submit(run_request(b'{"ok": 1}')),
            submitter.submit(run_request(b"")),
            submitter.submit(run_request(b'{"ok": 2}')),
            return_exceptions=True,
        )
    refused = results[1]
    assert isinstance(refused, SubmissionRefused)
    assert refused.code == grpc.StatusCode.INVALID_ARGUMENT and "input" in refused.message
    assert isinstance(results[0], job_pb2.Job) and isinstance(results[2], job_pb2.Job)


async def test_an_idempotency_key_on_the_stream_returns_the_first_job(jobwire: Running) -> None:
    async with Submitter(jobwire.channel, jobwire.keys["client"]) as submitter:
        first = await submitter.submit(run_request(b'{"a": 1}', key="stream-key"))
        again = await submitter.submit(run_request(b'{"a": 2}', key="stream-key"))
    assert again.id == first.id
    assert (await stored_inputs(jobwire))[first.id] == {"a": 1}


async def test_the_submitter_fails_its_callers_when_the_server_is_unreachable() -> None:
    with socket.socket() as probe:  # a loopback port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        Submitter(channel, "jw_any") as submitter,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await submitter.submit(run_request(b"{}"))
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        # The next submission opens a new call (and fails the same way while nothing listens).
        with pytest.raises(grpc.aio.AioRpcError):
            await submitter.submit(run_request(b"{}"))


async def test_a_closed_submitter_refuses_new_submissions(jobwire: Running) -> None:
    submitter = Submitter(jobwire.channel, jobwire.keys["client"])
    await submitter.submit(run_request(b"{}"))
    await submitter.close()
    with pytest.raises(RuntimeError, match="closed"):
        await submitter.submit(run_request(b"{}"))


async def test_a_message_larger_than_the_in_flight_bound_is_answered_whole(
    jobwire: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The bound holds the reading back until earlier submissions are stored; it must not wait for
    # their answers to be sent (they leave only once the whole message was read).
    monkeypatch.setattr(jobs_api, "STREAM_IN_FLIGHT", 3)
    call = jobwire.stub.RunStream(metadata=jobwire.metadata())
    await call.write(jobs_pb2.RunStreamRequest(requests=[run_request(b'{"k": %d}' % k) for k in range(10)]))
    await call.done_writing()
    outcomes = await outcomes_of(call, 10)
    inputs = await stored_inputs(jobwire)
    assert [inputs[o.job.id] for o in outcomes] == [{"k": k} for k in range(10)]
