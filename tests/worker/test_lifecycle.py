"""Cancellation, recycling, heartbeats, draining and reconnection, against the fake server."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest

from jobwire.v1 import worker_pb2
from jobwire.worker import WorkerRecycle, context
from worker.fake_server import (
    PATIENCE,
    WELCOME,
    FakeStream,
    FakeWorkerService,
    RecordedSleep,
    make_worker,
    running,
    serving,
)


def _heartbeat_welcome(interval_ms: int) -> worker_pb2.Welcome:
    welcome = worker_pb2.Welcome()
    welcome.CopyFrom(WELCOME)
    welcome.heartbeat_interval_ms = interval_ms
    return welcome


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(PATIENCE):
        while not condition():
            await asyncio.sleep(0.002)


async def _ended(task: asyncio.Task[None]) -> BaseException | None:
    """Waits for the worker's run() to end; its exception, if any."""
    done, _ = await asyncio.wait({task}, timeout=PATIENCE)
    assert task in done, "run() did not end"
    return task.exception()


async def test_cancelling_an_async_handler_stops_it_at_once(service: FakeWorkerService, address: str) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def handler(job: dict[str, Any]) -> object:
        started.set()
        try:
            await asyncio.sleep(PATIENCE * 10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    worker = make_worker(handler, address)
    async with running(worker):
        stream = await service.stream()
        stream.assign("a")
        await asyncio.wait_for(started.wait(), PATIENCE)
        stream.cancel("a", reason="TIMED_OUT")
        await stream.until(lambda s: s.credits() == 1)
        assert cancelled.is_set()
        # The slot is free again: the next job runs.
        stream.assign("b")
        await asyncio.wait_for(cancelled.wait(), PATIENCE)
    assert stream.results() == []  # nothing is reported for a cancelled attempt


async def test_a_sync_handler_sees_its_cancellation(service: FakeWorkerService, address: str) -> None:
    reasons: list[str | None] = []
    started = threading.Event()

    def handler(job: dict[str, Any]) -> object:
        started.set()
        ctx = context()
        assert ctx.id == job["id"] and ctx.attempt == 2
        while not ctx.wait_cancelled(0.01):
            pass
        reasons.append(ctx.cancel_reason)
        ctx.raise_if_cancelled()
        return "never reported"

    worker = make_worker(handler, address)
    async with running(worker):
        stream = await service.stream()
        stream.assign("s", attempt=2)
        await asyncio.to_thread(started.wait, PATIENCE)
        stream.cancel("s", attempt=1)  # another attempt: ignored
        stream.cancel("s", attempt=2)
        await stream.until(lambda s: s.credits() == 1)
    assert reasons == ["CANCELLED"] and stream.results() == []
    assert stream.kinds().count("credit") == 1


async def test_a_sync_generator_is_stopped_between_yields(service: FakeWorkerService, address: str) -> None:
    yielded: list[int] = []

    def handler(job: dict[str, Any]) -> Any:
        for i in range(1000):
            yielded.append(i)
            yield i
            context().wait_cancelled(PATIENCE)  # resumes as soon as the cancel arrived

    worker = make_worker(handler, address)
    async with running(worker):
        stream = await service.stream()
        stream.assign("g")
        await stream.until(lambda s: len(s.chunks("g")) == 1)
        stream.cancel("g")
        await stream.until(lambda s: s.credits() == 1)
    # Depending on whether the pump had already asked for the next item when the cancel came, the
    # generator ran on to its next yield (a thread cannot be interrupted) or not; either way it was not
    # resumed after that, and nothing it yielded after the cancel was sent.
    assert yielded in ([0], [0, 1]) and [c.seq for c in stream.chunks("g")] == [1]
    assert stream.results() == []


async def test_a_stuck_sync_handler_recycles_the_worker(service: FakeWorkerService, address: str) -> None:
    release = threading.Event()
    other_done = threading.Event()

    def handler(job: dict[str, Any]) -> object:
        if job["id"] == "stuck":
            release.wait(PATIENCE)  # ignores the cancellation
        else:
            other_done.wait(PATIENCE)
        return job["id"]

    worker = make_worker(handler, address, concurrency=2, stuck_after=0.05)
    try:
        async with running(worker) as task:
            stream = await service.stream()
            stream.assign("stuck")
            stream.assign("other")
            await stream.until(lambda s: s.free == 0)
            stream.cancel("stuck")
            # Recycling drains first: the server hears it, and the other job still finishes and reports.
            await stream.until(lambda s: any(h.draining for h in s.heartbeats()))
            assert not task.done()
            other_done.set()
            error = await _ended(task)
        assert isinstance(error, WorkerRecycle) and "stuck" in error.reason
        assert [r.job_id for r in stream.results()] == ["other"]
        assert stream.credits() == 1  # none for the stuck job: its thread never stopped
        await stream.until(lambda s: s.ended.is_set())  # the stream was closed cleanly
    finally:
        release.set()


async def test_refresh_worker_recycles_after_the_job(service: FakeWorkerService, address: str) -> None:
    async def handler(job: dict[str, Any]) -> object:
        return {"out": 1, "refresh_worker": True}

    worker = make_worker(handler, address)
    async with running(worker) as task:
        stream = await service.stream()
        stream.assign("r")
        error = await _ended(task)
    assert isinstance(error, WorkerRecycle) and "refresh_worker" in error.reason
    assert json.loads(stream.result("r").output) == {"out": 1}


async def test_heartbeats_list_the_running_attempts(service: FakeWorkerService, address: str) -> None:
    release = asyncio.Event()

    async def handler(job: dict[str, Any]) -> object:
        await release.wait()
        return None

    service.welcome = _heartbeat_welcome(20)
    worker = make_worker(handler, address)
    async with running(worker):
        stream = await service.stream()
        stream.assign("h", attempt=3)
        await stream.until(lambda s: any(len(h.running) == 1 for h in s.heartbeats()))
        beat = next(h for h in stream.heartbeats() if h.running)
        assert [(a.job_id, a.attempt) for a in beat.running] == [("h", 3)] and not beat.draining
        release.set()
        await stream.until(lambda s: s.settled("h"))
        count = len(stream.heartbeats())
        await stream.until(lambda s: len(s.heartbeats()) > count)
        assert list(stream.heartbeats()[-1].running) == []


async def _drains_after_the_running_job(
    service: FakeWorkerService, address: str, start_drain: Callable[[Any, FakeStream], None]
) -> FakeStream:
    release = asyncio.Event()

    async def handler(job: dict[str, Any]) -> AsyncIterator[object]:
        yield "working"
        await release.wait()
        yield "done"

    worker = make_worker(handler, address)
    async with running(worker) as task:
        stream = await service.stream()
        stream.assign("d")
        await stream.until(lambda s: len(s.chunks("d")) == 1)
        start_drain(worker, stream)
        await stream.until(lambda s: any(h.draining for h in s.heartbeats()))
        assert [(a.job_id, a.attempt) for a in stream.heartbeats()[0].running] == [("d", 1)]
        assert not task.done() and worker.draining
        release.set()
        assert await _ended(task) is None
    assert stream.has_result("d") and len(stream.chunks("d")) == 2
    assert stream.kinds()[-2:] == ["result", "credit"]
    await stream.until(lambda s: s.ended.is_set())
    assert len(service.streams) == 1
    return stream


async def test_the_server_drain_finishes_the_running_job(service: FakeWorkerService, address: str) -> None:
    await _drains_after_the_running_job(service, address, lambda worker, stream: stream.drain())


async def test_drain_from_another_thread(service: FakeWorkerService, address: str) -> None:
    def from_thread(worker: Any, stream: FakeStream) -> None:
        thread = threading.Thread(target=worker.drain)
        thread.start()
        thread.join()

    await _drains_after_the_running_job(service, address, from_thread)


async def test_a_broken_stream_cancels_local_jobs_and_reconnects(
    service: FakeWorkerService, address: str
) -> None:
    first_cancelled = asyncio.Event()

    async def handler(job: dict[str, Any]) -> object:
        if job["id"] == "lost":
            try:
                await asyncio.sleep(PATIENCE * 10)
            except asyncio.CancelledError:
                first_cancelled.set()
                raise
        return job["id"]

    sleep = RecordedSleep()
    worker = make_worker(handler, address, sleep=sleep, concurrency=2)
    async with running(worker):
        first = await service.stream()
        first.assign("lost")
        await first.until(lambda s: s.free == 1)
        first.abort(grpc.StatusCode.UNAVAILABLE)
        second = await service.stream(1)
        assert first_cancelled.is_set()
        assert second.hello.slots == 2 and second.hello.worker_id == first.hello.worker_id
        second.assign("next")
        await second.until(lambda s: s.settled("next"))
    assert sleep.delays == [0.05]  # random() = 0.5 of the 0.1 s base: recorded, not slept
    assert first.results() == [] and first.credits() == 0


async def test_reconnects_after_a_server_restart_with_growing_backoff(service: FakeWorkerService) -> None:
    sleep = RecordedSleep(hold=True)
    async with serving(service) as address:
        worker = make_worker(lambda job: job["id"], address, sleep=sleep)
        port = int(address.rsplit(":", 1)[1])
        task = asyncio.create_task(worker.run())
        await service.stream()
    try:
        # The server is gone: each attempt is refused, and the delays grow (half of 0.1, 0.2, 0.4 s).
        for attempts in (1, 2, 3):
            await _until(lambda attempts=attempts: len(sleep.delays) == attempts)  # type: ignore[misc]
            if attempts < 3:
                sleep.release()
        assert sleep.delays == [0.05, 0.1, 0.2]
        async with serving(service, port):
            sleep.release()
            stream = await service.stream(1)
            stream.assign("again")
            await stream.until(lambda s: s.settled("again"))
            worker.drain()
            assert await _ended(task) is None
            # A Welcome resets the backoff.
            assert worker._backoff.next_delay() == 0.05
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize("code", [grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND])
async def test_other_refusals_are_not_retried(service: FakeWorkerService, address: str, code: Any) -> None:
    from jobwire.worker import WorkerRejected

    sleep = RecordedSleep()
    service.refuse = code
    task = asyncio.create_task(make_worker(lambda job: None, address, sleep=sleep).run())
    error = await _ended(task)
    assert isinstance(error, WorkerRejected) and error.code == code
    assert sleep.delays == [] and len(service.streams) == 1


async def test_drain_before_connecting_returns_at_once(service: FakeWorkerService, address: str) -> None:
    worker = make_worker(lambda job: None, address)
    worker.drain()
    await asyncio.wait_for(worker.run(), PATIENCE)
    assert service.streams == []
