"""An unmodified Runpod worker (`runpod.serverless.start`, runpod 1.12.0) serving jobwire jobs through
Runpod's worker HTTP protocol, as a real process on loopback.

The worker runs with RUNPOD_SKIP_AUTO_SYSTEM_CHECKS=true (otherwise it probes a public DNS address at
start-up) and a clean HOME (so no ~/.runpod/config.toml supplies another key).
"""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from jobwire.server.clock import ManualClock
from jobwire.server.service.dispatch import DispatchSettings
from jobwire.server.service.http_workers import HttpWorkerSettings
from server_fixtures import ENDPOINT, Running, running, start_jobwire

HANDLER = textwrap.dedent(
    """
    import asyncio
    import runpod

    async def handler(job):
        data = job["input"]
        mode = data.get("mode")
        if mode == "fail":
            raise ValueError("boom")
        if mode == "slow":
            await asyncio.sleep(120)
        if mode == "progress":
            runpod.serverless.progress_update(job, {"pct": 50})
            await asyncio.sleep(0.2)
        if mode == "stream":
            return {"unexpected": True}
        return {"sum": data["a"] + data["b"], "s3": job.get("s3Config")}

    runpod.serverless.start({"handler": handler})
    """
)

STREAMER = textwrap.dedent(
    """
    import runpod

    def handler(job):
        for token in job["input"]["tokens"]:
            yield token

    runpod.serverless.start({"handler": handler, "return_aggregate_stream": True})
    """
)


async def start_worker(
    service: Running, tmp_path: Path, source: str, worker_id: str
) -> asyncio.subprocess.Process:
    script = tmp_path / f"{worker_id}.py"
    script.write_text(source)
    base = f"{service.server.http_url}/v2/{ENDPOINT}"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "RUNPOD_WEBHOOK_GET_JOB": f"{base}/job-take/$ID?gpu=test",
        "RUNPOD_WEBHOOK_POST_OUTPUT": f"{base}/job-done/$RUNPOD_POD_ID/$ID?gpu=test",
        "RUNPOD_WEBHOOK_POST_STREAM": f"{base}/job-stream/$RUNPOD_POD_ID/$ID?gpu=test",
        "RUNPOD_WEBHOOK_PING": f"{base}/ping/$RUNPOD_POD_ID",
        "RUNPOD_AI_API_KEY": service.keys["worker"],
        "RUNPOD_POD_ID": worker_id,
        "RUNPOD_ENDPOINT_ID": ENDPOINT,
        "RUNPOD_PING_INTERVAL": "1000",
        "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
        "RUNPOD_SKIP_GPU_CHECK": "true",
        "RUNPOD_LOG_LEVEL": os.environ.get("RP_LOG", "WARN"),
        "NO_PROXY": "127.0.0.1,localhost",
    }
    log = (tmp_path / f"{worker_id}.log").open("wb")
    return await asyncio.create_subprocess_exec(sys.executable, str(script), env=env, stdout=log, stderr=log)


@pytest.fixture
async def service(database_url: str) -> AsyncIterator[Running]:
    server = await start_jobwire(
        database_url,
        dispatch_settings=DispatchSettings(heartbeat_interval_ms=200),
        http_worker_settings=HttpWorkerSettings(poll_hold_s=1.0),
    )
    async with running(server) as service:
        yield service


@pytest.fixture
async def worker(service: Running, tmp_path: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    process = await start_worker(service, tmp_path, HANDLER, "rp-worker-1")
    yield process
    process.terminate()
    await process.wait()


async def runsync(service: Running, body: object) -> dict[str, object]:
    response = await service.http.post(
        f"/v2/{ENDPOINT}/runsync?wait=60000", json=body, headers=service.headers()
    )
    assert response.status_code == 200
    return dict(response.json())


async def test_an_unmodified_runpod_worker_completes_and_fails_jobs(
    service: Running, worker: asyncio.subprocess.Process
) -> None:
    done = await runsync(service, {"input": {"a": 1, "b": 2}, "s3Config": {"accessId": "k"}})
    assert done["status"] == "COMPLETED"
    assert done["output"] == {"sum": 3, "s3": {"accessId": "k"}}
    assert done["workerId"] == "rp-worker-1"
    failed = await runsync(service, {"input": {"mode": "fail"}})
    assert failed["status"] == "FAILED"
    assert "boom" in str(failed["error"]) and "ValueError" in str(failed["error"])


async def test_progress_updates_are_not_results(service: Running, worker: asyncio.subprocess.Process) -> None:
    done = await runsync(service, {"input": {"mode": "progress", "a": 2, "b": 2}})
    assert done["status"] == "COMPLETED" and done["output"] == {"sum": 4, "s3": None}


async def test_cancel_reaches_the_worker_through_the_stop_channel(
    service: Running, worker: asyncio.subprocess.Process
) -> None:
    slow = (
        await service.http.post(
            f"/v2/{ENDPOINT}/run", json={"input": {"mode": "slow"}}, headers=service.headers()
        )
    ).json()["id"]
    while (await service.http.get(f"/v2/{ENDPOINT}/status/{slow}", headers=service.headers())).json()[
        "status"
    ] != "IN_PROGRESS":
        await asyncio.sleep(0.05)
    await service.http.post(f"/v2/{ENDPOINT}/cancel/{slow}", headers=service.headers())
    # The worker (concurrency 1) only takes the next job once the cancelled one has stopped.
    after = await runsync(service, {"input": {"a": 5, "b": 5}})
    assert after["status"] == "COMPLETED" and after["output"] == {"sum": 10, "s3": None}
    cancelled = (await service.http.get(f"/v2/{ENDPOINT}/status/{slow}", headers=service.headers())).json()
    assert cancelled["status"] == "CANCELLED"


async def test_a_generator_worker_streams_chunks_and_aggregates(service: Running, tmp_path: Path) -> None:
    process = await start_worker(service, tmp_path, STREAMER, "rp-streamer")
    try:
        job_id = (
            await service.http.post(
                f"/v2/{ENDPOINT}/run", json={"input": {"tokens": ["a", "b", "c"]}}, headers=service.headers()
            )
        ).json()["id"]
        seen: list[object] = []
        while True:
            read = (
                await service.http.get(f"/v2/{ENDPOINT}/stream/{job_id}", headers=service.headers())
            ).json()
            seen += [chunk["output"] for chunk in read["stream"]]
            if read["status"] == "COMPLETED":
                break
        assert seen == ["a", "b", "c"]
        final = (await service.http.get(f"/v2/{ENDPOINT}/status/{job_id}", headers=service.headers())).json()
        assert final["output"] == ["a", "b", "c"]
    finally:
        process.terminate()
        await process.wait()


async def test_worker_routes_want_a_worker_key_and_answer_204_when_idle(service: Running) -> None:
    base = f"/v2/{ENDPOINT}"
    assert (await service.http.get(f"{base}/job-take/w9?gpu=x")).status_code == 401
    client = {"Authorization": service.keys["client"]}
    assert (await service.http.get(f"{base}/job-take/w9?gpu=x", headers=client)).status_code == 403
    worker = {"Authorization": service.keys["worker"]}
    idle = await service.http.get(f"{base}/job-take/w9?gpu=x&job_in_progress=0", headers=worker)
    assert idle.status_code == 204
    stranger = await service.http.post(
        f"{base}/job-done/w9/nope?isStream=false", content=b'{"output": 1}', headers=worker
    )
    assert stranger.status_code == 404
    bad = await service.http.get(f"{base}/job-take-batch/w9?batch_size=zero", headers=worker)
    assert bad.status_code == 400


async def test_execution_timeout_stops_the_runpod_worker(database_url: str, tmp_path: Path) -> None:
    clock = ManualClock()
    server = await start_jobwire(
        database_url,
        clock=clock,
        dispatch_settings=DispatchSettings(heartbeat_interval_ms=200, sweep_interval_s=0.05),
        http_worker_settings=HttpWorkerSettings(poll_hold_s=1.0),
    )
    async with running(server) as service:
        process = await start_worker(service, tmp_path, HANDLER, "rp-timeout")
        try:
            body = {"input": {"mode": "slow"}, "policy": {"executionTimeout": 5000}}
            job = (
                await service.http.post(f"/v2/{ENDPOINT}/run", json=body, headers=service.headers())
            ).json()
            while (
                await service.http.get(f"/v2/{ENDPOINT}/status/{job['id']}", headers=service.headers())
            ).json()["status"] != "IN_PROGRESS":
                await asyncio.sleep(0.05)
            clock.advance(seconds=6)
            # The stop channel frees the worker's only slot: the next job can only run once it has.
            after = await runsync(service, {"input": {"a": 1, "b": 1}})
            assert after["status"] == "COMPLETED"
            timed_out = (
                await service.http.get(f"/v2/{ENDPOINT}/status/{job['id']}", headers=service.headers())
            ).json()
            assert timed_out["status"] == "TIMED_OUT"
        finally:
            process.terminate()
            await process.wait()
