"""The transport's floor: what Python gRPC alone costs on this machine, with no database and no logic.

`python -m bench.floor` (the project's .venv) starts a grpc.aio server (uvloop, as jobwire's) whose
`Run` hands a job to a worker over a bidirectional stream and answers at once, whose `RunSync` answers
when the worker's result is back, and whose `Submit` stream takes many submissions a message; two
worker processes answer each job from a no-op async handler. Messages are raw bytes (no protobuf),
and what queued up while a write was in flight leaves in the next write, as in jobwire. It measures,
like the steady and latency scenarios:

- steady, 16 concurrent submitters, a unary call per job: jobs/s and machine CPU ms per job;
- the same submitters over one stream;
- sequential RunSync round trips with one worker: p50 and p99.

No system that makes a Python gRPC call per job can beat the first on this machine, nor one that makes
a unary call and a worker round trip per job the last; jobwire adds Postgres and its logic on top.
Loopback only.
"""

from __future__ import annotations

import asyncio
import collections
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import uvloop

from bench.common import free_port, percentile

SERVICE = "floor.Floor"
BODY = b'{"t": "x", "pad": "' + b"x" * 80 + b'"}'  # ~100 bytes, as the scenarios' inputs
ID = 36  # a job is its uuid followed by its input


def _same(data: bytes) -> bytes:
    return data


async def serve(port: int) -> None:  # noqa: C901 (the handlers share its state)
    workers: list[asyncio.Queue[bytes]] = []
    waiting: dict[bytes, asyncio.Future[bytes]] = {}
    state = {"done": 0, "next": 0}

    def hand_over(job: bytes) -> None:
        workers[state["next"] % len(workers)].put_nowait(job)
        state["next"] += 1

    async def run(job: bytes, context: Any) -> bytes:
        hand_over(job)
        return job[:ID]

    async def run_sync(job: bytes, context: Any) -> bytes:
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        waiting[job[:ID]] = future
        hand_over(job)
        return await future

    async def submit(messages: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        async for message in messages:
            jobs = message.split(b"\n")
            for job in jobs:
                hand_over(job)
            yield b"\n".join(job[:ID] for job in jobs)

    async def done(request: bytes, context: Any) -> bytes:
        return str(state["done"]).encode()

    async def connect(results: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        workers.append(queue)

        async def read() -> None:
            async for message in results:
                for result in message.split(b"\n"):
                    state["done"] += 1
                    future = waiting.pop(result[:ID], None)
                    if future is not None:
                        future.set_result(result)

        reader = asyncio.create_task(read())
        try:
            while True:
                batch = [await queue.get()]
                while not queue.empty():
                    batch.append(queue.get_nowait())
                yield b"\n".join(batch)
        finally:
            reader.cancel()

    server = grpc.aio.server()
    handlers = {
        "Run": grpc.unary_unary_rpc_method_handler(run, _same, _same),
        "RunSync": grpc.unary_unary_rpc_method_handler(run_sync, _same, _same),
        "Submit": grpc.stream_stream_rpc_method_handler(submit, _same, _same),
        "Done": grpc.unary_unary_rpc_method_handler(done, _same, _same),
        "Connect": grpc.stream_stream_rpc_method_handler(connect, _same, _same),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


async def work(port: int) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.stream_stream(f"/{SERVICE}/Connect", _same, _same)()
        results: asyncio.Queue[bytes] = asyncio.Queue()

        async def handle(job: bytes) -> None:
            await asyncio.sleep(0)  # the no-op async handler
            results.put_nowait(job[:ID] + b'{"ok": true}')

        async def write() -> None:
            while True:
                batch = [await results.get()]
                while not results.empty():
                    batch.append(results.get_nowait())
                await call.write(b"\n".join(batch))

        writer = asyncio.create_task(write())
        tasks: set[asyncio.Task[None]] = set()
        async for message in call:
            for job in message.split(b"\n"):
                task = asyncio.create_task(handle(job))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        writer.cancel()


def _busy_seconds() -> float:
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _job() -> bytes:
    return str(uuid.uuid4()).encode() + BODY


async def steady(port: int, submitters: int, seconds: float, stream: bool) -> dict[str, float]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        done = channel.unary_unary(f"/{SERVICE}/Done", _same, _same)
        stop = False
        if stream:
            call = channel.stream_stream(f"/{SERVICE}/Submit", _same, _same)()
            queued: list[tuple[asyncio.Future[None], bytes]] = []
            sent: collections.deque[asyncio.Future[None]] = collections.deque()
            ready = asyncio.Event()

            async def write() -> None:
                while True:
                    await ready.wait()
                    ready.clear()
                    batch, queued[:] = list(queued), []
                    sent.extend(future for future, _ in batch)
                    await call.write(b"\n".join(job for _, job in batch))

            async def read() -> None:
                async for message in call:
                    for _ in message.split(b"\n"):
                        sent.popleft().set_result(None)

            helpers = [asyncio.create_task(write()), asyncio.create_task(read())]

            async def submit() -> None:
                future = asyncio.get_running_loop().create_future()
                queued.append((future, _job()))
                ready.set()
                await future
        else:
            run = channel.unary_unary(f"/{SERVICE}/Run", _same, _same)
            helpers = []

            async def submit() -> None:
                await run(_job())

        async def produce() -> None:
            while not stop:
                await submit()

        producers = [asyncio.create_task(produce()) for _ in range(submitters)]
        await asyncio.sleep(3)  # warm-up
        done0, busy0, t0 = int(await done(b"")), _busy_seconds(), time.monotonic()
        await asyncio.sleep(seconds)
        done1, busy1, t1 = int(await done(b"")), _busy_seconds(), time.monotonic()
        stop = True
        await asyncio.gather(*producers)
        for helper in helpers:
            helper.cancel()
        jobs = done1 - done0
        return {
            "jobs_per_s": round(jobs / (t1 - t0)),
            "cpu_ms_per_job": round(1000 * (busy1 - busy0) / jobs, 3),
        }


async def latency(port: int, jobs: int) -> dict[str, float]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        run_sync = channel.unary_unary(f"/{SERVICE}/RunSync", _same, _same)
        times: list[float] = []
        for i in range(jobs + 200):
            started = time.perf_counter_ns()
            await run_sync(_job())
            if i >= 200:  # warm-up
                times.append((time.perf_counter_ns() - started) / 1e6)
        return {"p50_ms": round(percentile(times, 50), 3), "p99_ms": round(percentile(times, 99), 3)}


def _spawn(role: str, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "bench.floor", role, str(port)])


def measure(role: str, workers: int, *args: Any) -> dict[str, float]:
    port = free_port()
    processes = [_spawn("serve", port)]
    try:
        time.sleep(1.0)
        processes += [_spawn("work", port) for _ in range(workers)]
        time.sleep(1.0)
        return uvloop.run(steady(port, *args) if role == "steady" else latency(port, *args))
    finally:
        for process in reversed(processes):  # the workers first: they would report the server's end
            process.kill()
            process.wait()


def main() -> None:
    if len(sys.argv) == 3:
        role, port = sys.argv[1], int(sys.argv[2])
        uvloop.run(serve(port) if role == "serve" else work(port))
        return
    print("steady, a Run call per job:", measure("steady", 2, 16, 10.0, False))
    print("steady, one stream:        ", measure("steady", 2, 16, 10.0, True))
    print("RunSync, sequential:       ", measure("latency", 1, 1000))


if __name__ == "__main__":
    main()
