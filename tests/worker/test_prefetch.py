"""Prefetch: a worker holds jobs beyond its slots, which start as slots free, when its handlers are fast."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from jobwire.worker import Worker
from jobwire.worker._prefetch import ROUND_TRIP_S, Prefetch
from worker.fake_server import PATIENCE, FakeWorkerService, make_worker, running


async def test_prefetched_jobs_wait_for_a_free_slot_and_start_in_order(
    service: FakeWorkerService, address: str
) -> None:
    running_now, most, started = 0, 0, []
    began = {job_id: asyncio.Event() for job_id in "abcd"}
    gates = {job_id: asyncio.Event() for job_id in "abcd"}

    async def handler(job: dict[str, Any]) -> object:
        nonlocal running_now, most
        running_now += 1
        most = max(most, running_now)
        started.append(job["id"])
        began[job["id"]].set()
        await gates[job["id"]].wait()
        running_now -= 1
        return job["id"]

    worker = make_worker(handler, address, concurrency=2, prefetch=2)
    async with running(worker):
        stream = await service.stream()
        assert (stream.hello.slots, stream.hello.prefetch) == (2, 2)
        stream.assign_together({job_id: None for job_id in "abcd"})
        await _started(began["a"], began["b"])
        assert started == ["a", "b"]  # c and d wait in the worker (they came in the same message)
        gates["b"].set()
        await _started(began["c"])
        assert started == ["a", "b", "c"]
        for gate in gates.values():
            gate.set()
        # Each job that ended gave one job's room back: the server may send 2 + 2 again.
        await stream.until(lambda s: len(s.results()) == 4 and s.credits() == 4)
    assert most == 2
    assert sorted(r.job_id for r in stream.results()) == list("abcd")


async def test_a_cancelled_prefetched_job_never_starts_and_gives_its_room_back(
    service: FakeWorkerService, address: str
) -> None:
    started: list[str] = []
    began = asyncio.Event()
    release = asyncio.Event()

    async def handler(job: dict[str, Any]) -> object:
        started.append(job["id"])
        began.set()
        await release.wait()
        return job["id"]

    worker = make_worker(handler, address, concurrency=1, prefetch=1)
    async with running(worker):
        stream = await service.stream()
        stream.assign_together({"a": None, "b": None})
        await _started(began)
        stream.cancel("b")
        await stream.until(lambda s: s.credits() == 1)  # b's room, with no result for b
        release.set()
        await stream.until(lambda s: s.has_result("a") and s.credits() == 2)
    assert started == ["a"] and [r.job_id for r in stream.results()] == ["a"]


async def test_auto_asks_for_prefetched_jobs_once_a_fast_job_ended(
    service: FakeWorkerService, address: str
) -> None:
    async def handler(job: dict[str, Any]) -> object:
        return job["id"]

    worker = make_worker(handler, address, concurrency=2, prefetch="auto")
    async with running(worker):
        stream = await service.stream()
        assert stream.hello.prefetch == 6  # the most it may ask for: three per slot
        stream.assign("a")
        # A handler this fast leaves each slot waiting on the server: it asks for a's slot and 6 more
        # (and nothing before: with more, the count would pass 7 and never come back to it).
        await stream.until(lambda s: s.has_result("a") and s.credits() == 7)


def test_auto_prefetches_for_fast_handlers_and_not_for_slow_ones() -> None:
    fast, slow, medium = Prefetch(4, "auto"), Prefetch(4, "auto"), Prefetch(4, "auto")
    assert fast.wanted == 0 and fast.limit == 12  # nothing known yet; then at most three per slot
    fast.observe(0.0001)
    slow.observe(2.0)  # a GPU job of seconds: a prefetched job would only wait behind it
    medium.observe(ROUND_TRIP_S * 2)  # two round trips: 4 slots x 1/2 = 2 jobs cover one round trip
    assert (fast.wanted, slow.wanted, medium.wanted) == (12, 0, 2)
    for _ in range(30):  # the handler slowed down: the prefetch follows the moving average
        fast.observe(2.0)
    assert fast.wanted == 0


def test_a_fixed_prefetch_holds_and_is_checked() -> None:
    assert Prefetch(3, 9).wanted == 9 and Prefetch(3, 0).limit == 0
    for bad in (-1, 10, True, "lots"):
        with pytest.raises(ValueError, match="prefetch must be"):
            Worker(lambda job: None, endpoint="ep", key="wk", concurrency=3, prefetch=bad)  # type: ignore[arg-type]


async def _started(*events: asyncio.Event) -> None:
    await asyncio.wait_for(asyncio.gather(*(event.wait() for event in events)), PATIENCE)
