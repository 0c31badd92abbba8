"""Batches on the worker stream: what queued up while a write was in flight leaves in one message."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from jobwire.v1 import worker_pb2
from worker.fake_server import WELCOME, FakeWorkerService, make_worker, running

BIG = 300 * 1024  # over the worker's 256 KiB batch cap


async def test_results_that_end_together_leave_in_one_batch_and_a_big_one_alone(
    service: FakeWorkerService, address: str
) -> None:
    service.welcome = worker_pb2.Welcome(**{**_fields(WELCOME), "accepts_batches": True})
    started: list[str] = []
    release = asyncio.Event()

    async def handler(job: dict[str, Any]) -> object:
        started.append(job["id"])
        if len(started) == 4:
            release.set()
        await release.wait()  # all four end in the same turn of the event loop
        return "x" * BIG if job["input"]["big"] else job["id"]

    worker = make_worker(handler, address, concurrency=4)
    async with running(worker):
        stream = await service.stream()
        assert stream.hello.accepts_batches
        stream.assign_together(
            {"a": {"big": False}, "b": {"big": True}, "c": {"big": False}, "d": {"big": False}}
        )
        await stream.until(lambda s: len(s.results()) == 4 and s.credits() == 4)
    assert sorted(started) == ["a", "b", "c", "d"]
    outputs = {r.job_id: json.loads(r.output) for r in stream.results()}
    assert outputs == {"a": "a", "b": "x" * BIG, "c": "c", "d": "d"}
    # a's report was batched; b's output is over the cap, so b went on its own and c, d after it.
    assert len(stream.batch_bytes) == 2 and max(stream.batch_bytes) <= 256 * 1024
    reports = [k for k in stream.kinds() if k in ("result", "credit")]
    assert reports == ["result", "credit"] * 4


async def test_no_batches_to_a_server_that_did_not_offer_them(
    service: FakeWorkerService, address: str
) -> None:
    release = asyncio.Event()
    started: list[str] = []

    async def handler(job: dict[str, Any]) -> object:
        started.append(job["id"])
        if len(started) == 3:
            release.set()
        await release.wait()
        return job["id"]

    worker = make_worker(handler, address, concurrency=3)
    async with running(worker):
        stream = await service.stream()
        for job_id in "abc":
            stream.assign(job_id)
        await stream.until(lambda s: len(s.results()) == 3 and s.credits() == 3)
    assert stream.batch_bytes == [] and sorted(r.job_id for r in stream.results()) == ["a", "b", "c"]


def _fields(message: worker_pb2.Welcome) -> dict[str, Any]:
    return {field.name: value for field, value in message.ListFields()}
