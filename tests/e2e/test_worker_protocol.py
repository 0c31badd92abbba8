"""The server's side of WorkerService.Connect, driven message by message over a real gRPC channel."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from jobwire.server.clock import ManualClock
from jobwire.server.service.dispatch import DispatchSettings
from jobwire.v1 import worker_pb2
from server_fixtures import ENDPOINT, Running, create_keys, running, start_jobwire
from worker_fixtures import RawWorker

# No fallback polling: a job can reach an idle worker only through LISTEN/NOTIFY, so these tests show
# that the wake-up path works rather than that a poll eventually found the job.
NO_POLL = DispatchSettings(poll_interval_s=3600, heartbeat_interval_ms=20, sweep_interval_s=0.02)


@pytest.fixture
async def service(database_url: str, clock: ManualClock) -> AsyncIterator[Running]:
    server = await start_jobwire(database_url, clock=clock, dispatch_settings=NO_POLL)
    async with running(server) as service:
        yield service


def worker(
    service: Running, worker_id: str = "w1", slots: int = 1, key: str = "worker", prefetch: int = 0
) -> RawWorker:
    return RawWorker(service.channel, service.keys[key], ENDPOINT, worker_id, slots, prefetch)


async def submit(service: Running, body: object | None = None) -> str:
    payload = {"input": {"n": 1}} if body is None else body
    response = await service.http.post(f"/v2/{ENDPOINT}/run", json=payload, headers=service.headers())
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


async def status(service: Running, job_id: str) -> dict[str, object]:
    response = await service.http.get(f"/v2/{ENDPOINT}/status/{job_id}", headers=service.headers())
    return dict(response.json())


async def until(service: Running, job_id: str, expected: str) -> dict[str, object]:
    """Polls /status until the job reaches `expected` (the test's own wait, not the server's)."""
    while (view := await status(service, job_id))["status"] != expected:
        await asyncio.sleep(0.01)
    return view


async def test_welcome_then_an_idle_worker_gets_a_new_job_pushed(service: Running) -> None:
    w = worker(service)
    welcome = await w.start()
    assert (
        welcome.session_id and welcome.heartbeat_interval_ms == 20 and welcome.max_chunk_bytes == 1024 * 1024
    )
    job_id = await submit(service, {"input": {"big": 12345678901234567890}, "s3Config": {"accessId": "a"}})
    assign = await w.assignment()
    assert (assign.job_id, assign.attempt) == (job_id, 1)
    assert json.loads(assign.input) == {"big": 12345678901234567890}
    assert json.loads(assign.s3_config) == {"accessId": "a"}
    assert assign.execution_timeout_ms == 600_000
    view = await status(service, job_id)
    assert view["status"] == "IN_PROGRESS" and view["workerId"] == "w1"
    w.result(assign, b'{"sum": 3}')
    done = await until(service, job_id, "COMPLETED")
    assert done["output"] == {"sum": 3} and isinstance(done["executionTime"], int)
    w.close()


async def test_a_worker_never_holds_more_jobs_than_its_slots(service: Running) -> None:
    first, second, third = [await submit(service) for _ in range(3)]
    w = worker(service, slots=2)
    await w.start()
    got = {(await w.assignment()).job_id, (await w.assignment()).job_id}
    assert got == {first, second}
    # A third assignment may only follow a credit.
    nothing = asyncio.ensure_future(w.read())
    await asyncio.sleep(0.1)
    assert not nothing.done()
    w.send(credit=worker_pb2.Credit(slots=1))
    message = await nothing
    assert message.assign.job_id == third
    w.close()


async def test_credits_count_up_to_the_slots_and_at_most_three_prefetched_jobs_per_slot(
    service: Running,
) -> None:
    jobs = [await submit(service) for _ in range(6)]
    w = worker(service, slots=1, prefetch=5)  # the server allows prefetch up to 3 per slot
    await w.start()
    first = await w.assignment()
    assert first.job_id == jobs[0]  # the Hello's slots are the first credits: prefetch is asked for
    # Outstanding credits count up to slots + prefetch = 4 (not 6, not 10), whatever the worker asks.
    w.send(credit=worker_pb2.Credit(slots=10))
    assert [(await w.assignment()).job_id for _ in range(4)] == jobs[1:5]
    held = [(await status(service, job_id))["status"] for job_id in jobs[:5]]
    assert held == ["IN_PROGRESS"] * 5
    nothing = asyncio.ensure_future(w.read())
    await asyncio.sleep(0.1)
    assert not nothing.done()
    w.result(first, b"1")  # and a credit
    message = await nothing
    assert message.assign.job_id == jobs[5]
    await until(service, first.job_id, "COMPLETED")
    w.close()


async def test_a_freed_slot_claims_only_when_jobs_were_queued_since_the_queue_was_found_empty(
    service: Running,
) -> None:
    w = worker(service)
    await w.start()
    while await claim_counts(service) != {"empty": 1}:  # the worker came: one claim, on an empty queue
        await asyncio.sleep(0.01)
    for _ in range(3):
        job_id = await submit(service)  # starts on the free slot in its insert: no claim
        assign = await w.assignment()
        # The credit first, so that the server has it once the job shows COMPLETED: the slot is free
        # again and the queue still empty.
        w.send(credit=worker_pb2.Credit(slots=1))
        w.send(result=worker_pb2.Result(job_id=assign.job_id, attempt=assign.attempt, output=b"1"))
        await until(service, job_id, "COMPLETED")
    busy = await submit(service)
    queued = await submit(service)  # no free slot: queued, which the dispatcher hears of
    assign = await w.assignment()
    assert assign.job_id == busy
    w.result(assign, b"1")  # this credit claims, and finds the queued job
    assert (await w.assignment()).job_id == queued
    claims = await claim_counts(service)
    assert claims == {"empty": 1, "found": 1}  # (each of the 4 credits before claimed when it came)
    w.close()


async def claim_counts(service: Running) -> dict[str, float]:
    text = (await service.http.get("/metrics")).text
    return {
        sample.labels["outcome"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "jobwire_claims_total" and sample.labels["endpoint"] == ENDPOINT
    }


async def test_normal_jobs_go_before_low_priority_ones(service: Running) -> None:
    low = await submit(service, {"input": 1, "policy": {"lowPriority": True}})
    normal = await submit(service, {"input": 2})
    w = worker(service)
    await w.start()
    first = await w.assignment()
    assert first.job_id == normal
    w.result(first, b"2")
    assert (await w.assignment()).job_id == low
    w.close()


async def test_cancel_reaches_the_worker_and_its_late_result_is_ignored(service: Running) -> None:
    w = worker(service)
    await w.start()
    job_id = await submit(service)
    assign = await w.assignment()
    response = await service.http.post(f"/v2/{ENDPOINT}/cancel/{job_id}", headers=service.headers())
    assert response.json()["status"] == "CANCELLED"
    stop = (await w.read()).cancel
    assert (stop.job_id, stop.attempt, stop.reason) == (job_id, 1, "CANCELLED")
    w.result(assign, b'"too late"')
    # The credit that followed the late result frees the slot: the next job comes, the cancelled stays so.
    nxt = await submit(service)
    assert (await w.assignment()).job_id == nxt
    assert (await status(service, job_id)) == {
        "id": job_id,
        "status": "CANCELLED",
        "delayTime": 0,
        "executionTime": 0,
        "workerId": "w1",
    }
    w.close()


async def test_execution_timeout_ends_the_job_and_stops_the_worker(
    service: Running, clock: ManualClock
) -> None:
    w = worker(service)
    await w.start()
    job_id = await submit(service, {"input": 1, "policy": {"executionTimeout": 5000}})
    await w.assignment()
    clock.advance(seconds=6)
    stop = (await w.read()).cancel
    assert (stop.job_id, stop.reason) == (job_id, "TIMED_OUT")
    view = await status(service, job_id)
    assert view["status"] == "TIMED_OUT" and "5000 ms" in str(view["error"])
    w.close()


async def test_a_broken_stream_gives_its_job_to_another_worker(service: Running) -> None:
    a = worker(service, "a")
    await a.start()
    job_id = await submit(service)
    first = await a.assignment()
    b = worker(service, "b")
    await b.start()
    a.abort()
    second = await b.assignment()
    assert (second.job_id, second.attempt) == (job_id, 2)
    b.result(second, b'"b did it"')
    assert (await until(service, job_id, "COMPLETED"))["output"] == "b did it"
    assert first.attempt == 1
    b.close()


async def test_a_silent_worker_is_dropped_and_its_job_requeued(service: Running, clock: ManualClock) -> None:
    silent = worker(service, "silent")
    await silent.start()
    job_id = await submit(service)
    await silent.assignment()
    clock.advance(seconds=9)  # past the lease (8 s) with no message from the worker
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await silent.read()
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    await until(service, job_id, "IN_QUEUE")


async def test_progress_shows_as_output_while_running(service: Running) -> None:
    w = worker(service)
    await w.start()
    job_id = await submit(service)
    assign = await w.assignment()
    w.send(progress=worker_pb2.Progress(job_id=job_id, attempt=assign.attempt, output=b'{"pct": 40}'))
    while (await status(service, job_id)).get("output") != {"pct": 40}:
        await asyncio.sleep(0.01)
    w.result(assign, b'{"pct": 100}')
    assert (await until(service, job_id, "COMPLETED"))["output"] == {"pct": 100}
    w.close()


async def test_streamed_chunks_reach_rest_readers_in_order(service: Running) -> None:
    w = worker(service)
    await w.start()
    job_id = await submit(service)
    assign = await w.assignment()
    for seq, token in enumerate(["he", "llo"], start=1):
        chunk = worker_pb2.OutputChunk(
            job_id=job_id, attempt=assign.attempt, seq=seq, output=json.dumps(token).encode()
        )
        w.send(chunk=chunk)
    w.result(assign, b'["he", "llo"]')
    await until(service, job_id, "COMPLETED")
    read = await service.http.get(f"/v2/{ENDPOINT}/stream/{job_id}", headers=service.headers())
    assert read.json()["stream"] == [{"output": "he"}, {"output": "llo"}]
    w.close()


async def test_a_draining_worker_gets_no_new_job(service: Running) -> None:
    w = worker(service, slots=2)
    await w.start()
    w.send(heartbeat=worker_pb2.Heartbeat(draining=True))
    while not any(s.draining for s in service.server.dispatcher.sessions):
        await asyncio.sleep(0.01)
    # A second worker proves the job was dispatchable: it takes it.
    other = worker(service, "other")
    await other.start()
    job_id = await submit(service)
    assert (await other.assignment()).job_id == job_id
    w.close()
    other.close()


async def test_health_counts_connected_workers(service: Running) -> None:
    w = worker(service, slots=1)
    await w.start()
    health = (await service.http.get(f"/v2/{ENDPOINT}/health", headers=service.headers())).json()
    assert health["workers"]["idle"] == 1 and health["workers"]["running"] == 0
    await submit(service)
    await w.assignment()
    while (await service.http.get(f"/v2/{ENDPOINT}/health", headers=service.headers())).json()["workers"][
        "running"
    ] != 1:
        await asyncio.sleep(0.01)
    w.close()


@pytest.mark.parametrize(
    ("key", "code"),
    [("client", grpc.StatusCode.PERMISSION_DENIED), ("other", grpc.StatusCode.PERMISSION_DENIED)],
)
async def test_only_worker_keys_of_the_endpoint_may_connect(
    service: Running, key: str, code: grpc.StatusCode
) -> None:
    w = worker(service, key=key)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await w.start()
    assert raised.value.code() == code


async def test_two_replicas_on_one_database_behave_as_one(database_url: str) -> None:
    a = await start_jobwire(database_url, dispatch_settings=NO_POLL)
    keys = await create_keys(a)
    b = await start_jobwire(database_url, dispatch_settings=NO_POLL)
    async with running(a, keys) as on_a, running(b, keys) as on_b:
        w = worker(on_b)  # the worker is connected to replica B
        await w.start()
        # Submitted on A, dispatched by B.
        sync_call = asyncio.ensure_future(
            on_a.http.post(f"/v2/{ENDPOINT}/runsync", json={"input": 1}, headers=on_a.headers())
        )
        assign = await w.assignment()
        w.result(assign, b'"from b"')
        body = (await sync_call).json()
        assert body["status"] == "COMPLETED" and body["output"] == "from b"
        # Cancelled on A, stopped on the worker at B.
        job_id = await submit(on_a)
        assign = await w.assignment()
        await on_a.http.post(f"/v2/{ENDPOINT}/cancel/{job_id}", headers=on_a.headers())
        assert (await w.read()).cancel.job_id == job_id
        w.close()


def batching_worker(service: Running, worker_id: str = "w1", slots: int = 1) -> RawWorker:
    w = worker(service, worker_id, slots)
    w.hello.accepts_batches = True
    return w


def reports(*assigns: worker_pb2.Assign) -> worker_pb2.ConnectRequest:
    """One batch: each job's result and its credit."""
    messages = []
    for assign in assigns:
        result = worker_pb2.Result(job_id=assign.job_id, attempt=assign.attempt, output=b'"done"')
        messages += [
            worker_pb2.ConnectRequest(result=result),
            worker_pb2.ConnectRequest(credit=worker_pb2.Credit(slots=1)),
        ]
    return worker_pb2.ConnectRequest(batch=worker_pb2.ConnectRequestBatch(messages=messages))


async def test_jobs_handed_over_together_reach_a_batching_worker_in_one_message(service: Running) -> None:
    queued = [await submit(service) for _ in range(3)]
    w = batching_worker(service, slots=3)
    assert (await w.start()).accepts_batches
    message = await w.read()
    assert message.WhichOneof("message") == "batch"
    assigns = [inner.assign for inner in message.batch.messages]
    assert [a.job_id for a in assigns] == queued
    w.send(batch=reports(*assigns).batch)
    for job_id in queued:
        assert (await until(service, job_id, "COMPLETED"))["output"] == "done"
    w.close()


async def test_a_worker_that_did_not_ask_for_batches_gets_one_message_per_job(service: Running) -> None:
    queued = [await submit(service) for _ in range(3)]
    w = worker(service, slots=3)
    await w.start()
    assert [(await w.assignment()).job_id for _ in queued] == queued
    w.close()


async def test_a_batch_inside_a_batch_ends_the_stream(service: Running) -> None:
    w = batching_worker(service)
    await w.start()
    inner = worker_pb2.ConnectRequest(batch=worker_pb2.ConnectRequestBatch())
    w.send(batch=worker_pb2.ConnectRequestBatch(messages=[inner]))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await w.read()
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "cannot hold another batch" in (error.value.details() or "")


async def test_results_stored_together_wake_the_waiters_of_another_replica(database_url: str) -> None:
    a = await start_jobwire(database_url, dispatch_settings=NO_POLL)
    keys = await create_keys(a)
    b = await start_jobwire(database_url, dispatch_settings=NO_POLL)
    async with running(a, keys) as on_a, running(b, keys) as on_b:
        w = batching_worker(on_b, slots=2)  # the worker is on B; the runsync callers wait on A
        await w.start()
        calls = [
            asyncio.ensure_future(
                on_a.http.post(f"/v2/{ENDPOINT}/runsync", json={"input": i}, headers=on_a.headers())
            )
            for i in range(2)
        ]
        assigns: list[worker_pb2.Assign] = []
        while len(assigns) < 2:
            message = await w.read()
            inner = message.batch.messages if message.HasField("batch") else [message]
            assigns += [m.assign for m in inner]
        # Both results in one message: B stores them in one statement and one notification. Both callers
        # on A get their results. (A waiter would also re-read on its own after a while, so which wake-up
        # reached A is shown by the store and JobEvents tests of the notification, not here.)
        w.send(batch=reports(*assigns).batch)
        bodies = [(await call).json() for call in calls]
        assert [(body["status"], body["output"]) for body in bodies] == [("COMPLETED", "done")] * 2
        w.close()
