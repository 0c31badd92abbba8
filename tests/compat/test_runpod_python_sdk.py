"""The official `runpod` Python SDK (1.12.0), unmodified, against `jobwire` over loopback HTTP.

The SDK is synchronous (requests), so its calls run in a thread while the server runs on the test's loop.
A clean HOME keeps a stray ~/.runpod/config.toml from supplying another key.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from jobwire.server.model import JobStatus
from jobwire.server.store import JobStore
from jobwire.worker import Worker
from server_fixtures import ENDPOINT, Running


@pytest.fixture
def runpod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("RUNPOD_SKIP_AUTO_SYSTEM_CHECKS", "true")
    return importlib.import_module("runpod")


def endpoint(runpod: Any, jobwire: Running, key: str = "client") -> Any:
    runpod.endpoint_url_base = f"{jobwire.server.http_url}/v2"
    return runpod.Endpoint(ENDPOINT, api_key=jobwire.keys[key])


async def test_run_status_cancel_health_purge(runpod: Any, jobwire: Running) -> None:
    ep = endpoint(runpod, jobwire)
    job = await asyncio.to_thread(ep.run, {"input": {"prompt": "hi"}})
    assert await asyncio.to_thread(job.status) == "IN_QUEUE"
    second = await asyncio.to_thread(ep.run, {"prompt": "wrapped by the SDK"})
    health = await asyncio.to_thread(ep.health)
    assert health["jobs"]["inQueue"] == 2 and health["workers"]["idle"] == 0
    cancelled = await asyncio.to_thread(job.cancel)
    assert cancelled == {"id": job.job_id, "status": "CANCELLED"}
    assert await asyncio.to_thread(job.status) == "CANCELLED"
    assert await asyncio.to_thread(ep.purge_queue) == {"removed": 1, "status": "completed"}
    assert await asyncio.to_thread(second.status) == "CANCELLED"


async def test_output_of_a_completed_job(runpod: Any, jobwire: Running) -> None:
    ep = endpoint(runpod, jobwire)
    job = await asyncio.to_thread(ep.run, {"input": {"a": 1, "b": 2}})
    store = JobStore(jobwire.server.database)
    now = datetime.now(UTC)
    (claimed,) = await store.claim_jobs(ENDPOINT, "w", 1, now + timedelta(seconds=30), now)
    assert claimed.input == b'{"a": 1, "b": 2}'  # as the SDK wrote it
    await store.finish_job(job.job_id, claimed.job.attempt, JobStatus.COMPLETED, b'{"sum": 3}', None, now)
    assert await asyncio.to_thread(job.output) == {"sum": 3}


async def test_a_wrong_key_raises_the_sdks_unauthorized_error(runpod: Any, jobwire: Running) -> None:
    runpod.endpoint_url_base = f"{jobwire.server.http_url}/v2"
    ep = runpod.Endpoint(ENDPOINT, api_key="jw_not-a-key")
    with pytest.raises(RuntimeError, match="401 Unauthorized"):
        await asyncio.to_thread(ep.run, {"input": 1})


async def handler(job: dict[str, Any]) -> AsyncIterator[object]:
    """Streams the tokens it is given; with return_aggregate_stream the output is their list."""
    for token in job["input"].get("tokens", []):
        yield token
    if "a" in job["input"]:
        yield job["input"]["a"] + job["input"]["b"]


@pytest.fixture
async def sdk_worker(jobwire: Running) -> AsyncIterator[Worker]:
    worker = Worker(
        handler,
        endpoint=ENDPOINT,
        key=jobwire.keys["worker"],
        server=jobwire.server.grpc_target,
        return_aggregate_stream=True,
    )
    task = asyncio.create_task(worker.run())
    yield worker
    worker.drain()
    await task


async def test_run_sync_status_output_and_stream_with_a_worker(
    runpod: Any, jobwire: Running, sdk_worker: Worker
) -> None:
    ep = endpoint(runpod, jobwire)
    assert await asyncio.to_thread(ep.run_sync, {"input": {"a": 20, "b": 22}}, 30) == [42]
    job = await asyncio.to_thread(ep.run, {"input": {"a": 1, "b": 2}})
    assert await asyncio.to_thread(job.output, 30) == [3]
    assert await asyncio.to_thread(job.status) == "COMPLETED"
    streamed = await asyncio.to_thread(ep.run, {"input": {"tokens": ["he", "llo"]}})
    assert await asyncio.to_thread(lambda: list(streamed.stream())) == ["he", "llo"]
