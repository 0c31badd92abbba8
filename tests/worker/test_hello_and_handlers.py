"""The worker against a fake server: Hello, each handler kind, Runpod's outcome mapping, progress."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc

from jobwire.worker import __version__, context, progress_update
from worker.fake_server import FakeStream, FakeWorkerService, make_worker, running


async def test_hello_says_who_the_worker_is(service: FakeWorkerService, address: str) -> None:
    worker = make_worker(lambda job: None, address, concurrency=3, worker_id="w-1")
    async with running(worker):
        stream = await service.stream()
        hello = stream.hello
        assert (hello.endpoint_id, hello.worker_id, hello.slots) == ("ep", "w-1", 3)
        assert hello.sdk_version == __version__ and hello.sdk_version
        assert list(hello.accelerators) == []  # no pynvml here
        assert stream.metadata["authorization"] == "Bearer wk"


async def test_the_default_worker_id_is_host_pid_random(service: FakeWorkerService, address: str) -> None:
    worker = make_worker(lambda job: None, address)
    async with running(worker):
        stream = await service.stream()
        assert stream.hello.worker_id == worker.worker_id
        assert len(worker.worker_id.split("-")) >= 3


def _sync_echo(job: dict[str, Any]) -> object:
    return {"echo": job["input"], "thread": threading.current_thread().name}


async def _async_echo(job: dict[str, Any]) -> object:
    await asyncio.sleep(0)
    return {"echo": job["input"]}


async def test_each_kind_of_handler_reports_its_output(service: FakeWorkerService, address: str) -> None:
    def gen(job: dict[str, Any]) -> Iterator[object]:
        yield job["input"]["n"]

    async def agen(job: dict[str, Any]) -> AsyncIterator[object]:
        yield job["input"]["n"]

    for name, handler in [("sync", _sync_echo), ("async", _async_echo), ("gen", gen), ("agen", agen)]:
        service.streams.clear()
        worker = make_worker(handler, address)
        async with running(worker):
            stream = await service.stream()
            stream.assign(name, {"n": 7})
            await stream.until(lambda s, name=name: s.settled(name))  # type: ignore[misc]
            result = stream.result(name)
            assert not result.HasField("error"), result.error
            output = json.loads(result.output)
            if name == "sync":
                assert output["echo"] == {"n": 7} and output["thread"].startswith("jobwire-job-")
            elif name == "async":
                assert output == {"echo": {"n": 7}}
            else:  # streams: one chunk, and an empty final output without aggregation
                assert [json.loads(c.output) for c in stream.chunks(name)] == [7]
                assert output == []


async def test_the_job_dict_has_s3config_and_webhook_when_sent(
    service: FakeWorkerService, address: str
) -> None:
    seen: list[dict[str, Any]] = []
    worker = make_worker(seen.append, address)
    async with running(worker):
        stream = await service.stream()
        stream.assign("plain", {"a": 1})
        stream.assign("full", {"a": 2}, s3_config=b'{"bucketName":"b"}', webhook="https://hook")
        await stream.until(lambda s: s.settled("plain") and s.settled("full"))
    assert seen == [
        {"id": "plain", "input": {"a": 1}},
        {"id": "full", "input": {"a": 2}, "s3Config": {"bucketName": "b"}, "webhook": "https://hook"},
    ]
    assert not stream.result("plain").output  # returned None: no output


async def _finished(stream: FakeStream, job_id: str, job_input: object = None) -> Any:
    stream.assign(job_id, job_input)
    await stream.until(lambda s: s.settled(job_id))
    return stream.result(job_id)


async def test_a_returned_error_fails_the_job_and_keeps_the_rest(
    service: FakeWorkerService, address: str
) -> None:
    def handler(job: dict[str, Any]) -> object:
        return {"error": job["input"]["error"], "partial": 1, "refresh_worker": False}

    worker = make_worker(handler, address)
    async with running(worker):
        stream = await service.stream()
        result = await _finished(stream, "j", {"error": 42})
    assert result.error == "42"
    assert json.loads(result.output) == {"partial": 1}  # error and refresh_worker removed


async def test_a_raised_exception_is_reported_as_runpod_does(
    service: FakeWorkerService, address: str
) -> None:
    def handler(job: dict[str, Any]) -> object:
        raise ValueError("bad input é")

    worker = make_worker(handler, address, worker_id="w-9")
    async with running(worker):
        stream = await service.stream()
        result = await _finished(stream, "j")
    error = json.loads(result.error)
    assert error["error_type"] == "<class 'ValueError'>"
    assert error["error_message"] == "bad input é"
    assert "in handler" in error["error_traceback"] and "ValueError: bad input" in error["error_traceback"]
    assert error["worker_id"] == "w-9"
    assert not result.output


async def test_an_output_that_is_not_json_fails_the_job(service: FakeWorkerService, address: str) -> None:
    async def handler(job: dict[str, Any]) -> object:
        return {"value": float("nan")}

    worker = make_worker(handler, address)
    async with running(worker):
        stream = await service.stream()
        result = await _finished(stream, "j")
    assert "Out of range float values are not JSON compliant" in json.loads(result.error)["error_message"]


async def test_progress_from_a_sync_handler_thread(service: FakeWorkerService, address: str) -> None:
    def handler(job: dict[str, Any]) -> object:
        progress_update(job, {"step": 1})
        context().progress("two")
        # A thread the handler starts itself has no context: progress_update finds the job by id.
        helper = threading.Thread(target=progress_update, args=(job, 3))
        helper.start()
        helper.join()
        return "done"

    worker = make_worker(handler, address)
    async with running(worker):
        stream = await service.stream()
        await _finished(stream, "p")
    assert stream.progress("p") == [{"step": 1}, "two", 3]
    kinds = [k for k in stream.kinds() if k in ("progress", "result")]
    assert kinds == ["progress", "progress", "progress", "result"]


async def test_progress_from_an_async_handler_comes_before_its_result(
    service: FakeWorkerService, address: str
) -> None:
    async def handler(job: dict[str, Any]) -> object:
        progress_update(job, 50)
        return 100

    worker = make_worker(handler, address)
    async with running(worker):
        stream = await service.stream()
        result = await _finished(stream, "p")
    assert stream.progress("p") == [50] and json.loads(result.output) == 100
    assert stream.kinds()[-3:] == ["progress", "result", "credit"]


async def test_concurrency_runs_jobs_in_parallel_within_the_credits(
    service: FakeWorkerService, address: str
) -> None:
    release = threading.Event()
    started: list[str] = []

    def handler(job: dict[str, Any]) -> object:
        started.append(job["id"])
        release.wait(PATIENCE_S)
        return job["id"]

    worker = make_worker(handler, address, concurrency=2)
    async with running(worker):
        stream = await service.stream()
        for job_id in ("a", "b", "c"):
            stream.assign(job_id)
        await _wait(lambda: len(started) == 2)
        assert sorted(started) == ["a", "b"] and stream.credits() == 0  # c waits for a free slot
        release.set()
        await stream.until(lambda s: len(s.results()) == 3 and s.credits() == 3)
    assert started[2] == "c" and stream.most_outstanding == 2
    # Each Result is followed by the Credit for its slot.
    reports = [k for k in stream.kinds() if k in ("result", "credit")]
    assert reports == ["result", "credit"] * 3


async def test_a_refused_worker_stops_with_the_status(service: FakeWorkerService, address: str) -> None:
    from jobwire.worker import WorkerRejected

    service.refuse = grpc.StatusCode.UNAUTHENTICATED
    worker = make_worker(lambda job: None, address)
    task = asyncio.create_task(worker.run())
    done, _ = await asyncio.wait({task}, timeout=PATIENCE_S)
    assert task in done
    error = task.exception()
    assert isinstance(error, WorkerRejected)
    assert error.code == grpc.StatusCode.UNAUTHENTICATED and error.details == "refused by the fake"
    assert len(service.streams) == 1  # no retry


PATIENCE_S = 2.0


async def _wait(condition: Any, patience: float = PATIENCE_S) -> None:
    async with asyncio.timeout(patience):
        while not condition():
            await asyncio.sleep(0.005)
