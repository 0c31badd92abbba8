"""The official `runpod-sdk` JS client (1.1.2), run by Node against jobwire, with a jobwire SDK worker.

The package comes from tests/compat/js/package-lock.json, installed by scripts/bootstrap (`npm ci`).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from jobwire.worker import Worker, context
from server_fixtures import ENDPOINT, Running

JS = Path(__file__).parent / "js"
# Node is part of the machine (like Python); the package itself is the project's to install, so a
# missing node_modules fails the tests instead of skipping them.
pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js 18 or later")


async def handler(job: dict[str, Any]) -> AsyncIterator[object]:
    data = job["input"]
    if "sleep" in data:
        while not context().cancelled:
            await asyncio.sleep(0.01)
    for token in data.get("tokens", []):
        yield token
    if "a" in data:
        yield data["a"] + data["b"]


@pytest.fixture
async def sdk_worker(jobwire: Running) -> AsyncIterator[Worker]:
    worker = Worker(
        handler, endpoint=ENDPOINT, key=jobwire.keys["worker"], server=jobwire.server.grpc_target,
        return_aggregate_stream=True,
    )  # fmt: skip
    task = asyncio.create_task(worker.run())
    yield worker
    worker.drain()
    await task


async def js(jobwire: Running, scenario: str) -> Any:
    process = await asyncio.create_subprocess_exec(
        "node", str(JS / "client.mjs"), f"{jobwire.server.http_url}/v2", jobwire.keys["client"],
        ENDPOINT, scenario,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode == 0, f"{out.decode()} {err.decode()}"
    return json.loads(out)


async def test_run_sync(jobwire: Running, sdk_worker: Worker) -> None:
    result = await js(jobwire, "runSync")
    assert result["status"] == "COMPLETED" and result["output"] == [42] and result["completed"] is True


async def test_run_then_status(jobwire: Running, sdk_worker: Worker) -> None:
    result = await js(jobwire, "runThenStatus")
    assert result["started"]["status"] == "IN_QUEUE"
    assert result["status"]["status"] == "COMPLETED" and result["status"]["output"] == [3]


async def test_stream(jobwire: Running, sdk_worker: Worker) -> None:
    result = await js(jobwire, "stream")
    assert result["chunks"] == [{"output": "x"}, {"output": "y"}, {"output": "z"}]


async def test_cancel(jobwire: Running, sdk_worker: Worker) -> None:
    result = await js(jobwire, "cancel")
    assert result["cancelled"]["status"] == "CANCELLED"
    assert result["after"]["status"] == "CANCELLED"
