"""The jobwire worker SDK as real worker processes (`jobwire worker ...`) against a real server."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from jobwire.server.clock import ManualClock
from jobwire.server.service.dispatch import DispatchSettings
from server_fixtures import ENDPOINT, Running, create_keys, running, start_jobwire

HANDLERS = textwrap.dedent(
    """
    import asyncio, os, pathlib, time
    from jobwire.worker import context, progress_update

    NAME = os.environ["WORKER_NAME"]

    def handler(job):
        data = job["input"]
        mode = data.get("mode")
        if mode == "fail":
            raise ValueError("boom")
        if mode == "until-cancelled":
            while not context().cancelled:
                time.sleep(0.01)
            return None
        if mode == "progress":
            progress_update(job, {"pct": 50})
            while not pathlib.Path(data["release"]).exists():
                time.sleep(0.01)
        if mode == "hold":  # for the kill test: tells the test it started, then waits for the release
            pathlib.Path(data["dir"], f"started-{NAME}").write_text(job["id"])
            while not pathlib.Path(data["dir"], "release").exists():
                time.sleep(0.01)
            with open(pathlib.Path(data["dir"], "completions"), "a") as done:
                done.write(NAME + "\\n")
        if mode == "busy":
            time.sleep(0.05)
        return {"sum": data.get("a", 0) + data.get("b", 0), "worker": NAME}

    async def tokens(job):
        for token in job["input"]["tokens"]:
            yield token
            await asyncio.sleep(0)
    """
)


async def start_worker(
    tmp_path: Path, target: str, key: str, name: str, handler: str = "handlers:handler", *extra: str
) -> asyncio.subprocess.Process:
    (tmp_path / "handlers.py").write_text(HANDLERS)
    env = {**os.environ, "WORKER_NAME": name, "PYTHONPATH": str(tmp_path)}
    log = (tmp_path / f"{name}.log").open("wb")
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "jobwire.server", "worker", handler,
        "--endpoint", ENDPOINT, "--server", target, "--key", key, "--worker-id", name, *extra,
        env=env, stdout=log, stderr=log,
    )  # fmt: skip


async def stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        await process.wait()


@pytest.fixture
async def service(database_url: str, clock: ManualClock) -> AsyncIterator[Running]:
    server = await start_jobwire(
        database_url, clock=clock, dispatch_settings=DispatchSettings(sweep_interval_s=0.05)
    )
    async with running(server) as service:
        yield service


@pytest.fixture
async def worker(service: Running, tmp_path: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    process = await start_worker(tmp_path, service.server.grpc_target, service.keys["worker"], "w1")
    yield process
    await stop(process)


async def post(service: Running, route: str, body: object) -> dict[str, object]:
    response = await service.http.post(f"/v2/{ENDPOINT}/{route}", json=body, headers=service.headers())
    assert response.status_code == 200, response.text
    return dict(response.json())


async def status(service: Running, job_id: object) -> dict[str, object]:
    return dict((await service.http.get(f"/v2/{ENDPOINT}/status/{job_id}", headers=service.headers())).json())


async def until(service: Running, job_id: object, wanted: str) -> dict[str, object]:
    while (view := await status(service, job_id))["status"] != wanted:
        await asyncio.sleep(0.02)
    return view


async def test_runsync_and_run_then_status(service: Running, worker: asyncio.subprocess.Process) -> None:
    done = await post(service, "runsync", {"input": {"a": 2, "b": 3}})
    assert done["status"] == "COMPLETED" and done["output"] == {"sum": 5, "worker": "w1"}
    job = await post(service, "run", {"input": {"a": 1, "b": 1}})
    assert (await until(service, job["id"], "COMPLETED"))["output"] == {"sum": 2, "worker": "w1"}


async def test_failure_and_progress(
    service: Running, worker: asyncio.subprocess.Process, tmp_path: Path
) -> None:
    failed = await post(service, "runsync", {"input": {"mode": "fail"}})
    assert (
        failed["status"] == "FAILED"
        and "boom" in str(failed["error"])
        and "ValueError" in str(failed["error"])
    )
    release = tmp_path / "release-progress"
    job = await post(service, "run", {"input": {"mode": "progress", "release": str(release)}})
    while (await status(service, job["id"])).get("output") != {"pct": 50}:
        await asyncio.sleep(0.02)
    assert (await status(service, job["id"]))["status"] == "IN_PROGRESS"
    release.touch()
    assert (await until(service, job["id"], "COMPLETED"))["output"] == {"sum": 0, "worker": "w1"}


async def test_cancel_of_a_running_job_reaches_the_handler(
    service: Running, worker: asyncio.subprocess.Process
) -> None:
    job = await post(service, "run", {"input": {"mode": "until-cancelled"}})
    await until(service, job["id"], "IN_PROGRESS")
    cancelled = await post(service, f"cancel/{job['id']}", {})
    assert cancelled["status"] == "CANCELLED"
    # One slot: the next job runs only because the handler really stopped.
    after = await post(service, "runsync", {"input": {"a": 4, "b": 4}})
    assert after["status"] == "COMPLETED"
    assert (await status(service, job["id"]))["status"] == "CANCELLED"


async def test_execution_timeout_stops_the_handler(
    service: Running, worker: asyncio.subprocess.Process, clock: ManualClock
) -> None:
    job = await post(
        service, "run", {"input": {"mode": "until-cancelled"}, "policy": {"executionTimeout": 5000}}
    )
    await until(service, job["id"], "IN_PROGRESS")
    clock.advance(seconds=6)
    assert (await until(service, job["id"], "TIMED_OUT"))["error"] == "execution timeout of 5000 ms exceeded"
    after = await post(service, "runsync", {"input": {"a": 1, "b": 2}})
    assert after["status"] == "COMPLETED"


async def test_streaming_with_an_async_generator(service: Running, tmp_path: Path) -> None:
    process = await start_worker(
        tmp_path,
        service.server.grpc_target,
        service.keys["worker"],
        "streamer",
        "handlers:tokens",
        "--aggregate-stream",
    )
    try:
        job = await post(service, "run", {"input": {"tokens": ["a", "b", "c"]}})
        seen: list[object] = []
        while True:
            read = (
                await service.http.get(f"/v2/{ENDPOINT}/stream/{job['id']}", headers=service.headers())
            ).json()
            seen += [chunk["output"] for chunk in read["stream"]]
            if read["status"] == "COMPLETED":
                break
        assert seen == ["a", "b", "c"]
        assert (await status(service, job["id"]))["output"] == ["a", "b", "c"]
    finally:
        await stop(process)


async def test_a_worker_killed_mid_job_has_its_job_completed_once_by_another(
    service: Running, tmp_path: Path
) -> None:
    target, key = service.server.grpc_target, service.keys["worker"]
    workers = {name: await start_worker(tmp_path, target, key, name) for name in ("wa", "wb")}
    try:
        job = await post(service, "run", {"input": {"mode": "hold", "dir": str(tmp_path)}})
        while not (started := [n for n in workers if (tmp_path / f"started-{n}").exists()]):
            await asyncio.sleep(0.02)
        (victim,) = started
        workers[victim].send_signal(signal.SIGKILL)
        await workers[victim].wait()
        survivor = next(n for n in workers if n != victim)
        while not (tmp_path / f"started-{survivor}").exists():
            await asyncio.sleep(0.02)
        (tmp_path / "release").touch()
        done = await until(service, job["id"], "COMPLETED")
        assert done["output"] == {"sum": 0, "worker": survivor}
        assert (tmp_path / "completions").read_text().split() == [survivor]
    finally:
        for process in workers.values():
            await stop(process)


async def test_two_replicas_share_the_work(database_url: str, tmp_path: Path) -> None:
    a = await start_jobwire(database_url)
    keys = await create_keys(a)
    b = await start_jobwire(database_url)
    async with running(a, keys) as on_a, running(b, keys) as on_b:
        workers = [
            await start_worker(tmp_path, on_a.server.grpc_target, keys["worker"], "on-a"),
            await start_worker(tmp_path, on_b.server.grpc_target, keys["worker"], "on-b"),
        ]
        try:
            jobs = [await post(on_a, "run", {"input": {"mode": "busy", "a": i}}) for i in range(20)]
            done = [await until(on_b, job["id"], "COMPLETED") for job in jobs]
            assert sorted(d["output"]["sum"] for d in done) == list(range(20))  # type: ignore[index]
            assert {d["output"]["worker"] for d in done} == {"on-a", "on-b"}  # type: ignore[index]
        finally:
            for process in workers:
                await stop(process)
