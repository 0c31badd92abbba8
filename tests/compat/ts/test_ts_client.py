"""A TypeScript client on the generated stubs (gen/ts) over Connect's gRPC transport, against jobwire.

The packages come from tests/compat/ts/package-lock.json, installed by scripts/bootstrap (`npm ci`). The
stubs are staged beside the client and that node_modules, as an application would vendor them, then
type-checked (`tsc`, strict) and run (`tsx`): Run, Status and Health, plus the status codes of a
missing job and of a bad key.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from jobwire.v1 import jobs_pb2
from server_fixtures import ENDPOINT, Running

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
# Node is part of the machine (like Python); the packages are the project's to install, so a missing
# node_modules fails the tests instead of skipping them.
pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js 20 or later")


def locked_version(lock: Path, package: str) -> str:
    version: str = json.loads(lock.read_text())["packages"][f"node_modules/{package}"]["version"]
    return version


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """client.ts with the generated stubs as ./gen and this folder's node_modules, in a fresh folder."""
    stage = tmp_path_factory.mktemp("ts-client")
    shutil.copytree(ROOT / "gen" / "ts", stage / "gen")
    for name in ("package.json", "tsconfig.json", "client.ts"):
        shutil.copy(HERE / name, stage / name)
    (stage / "node_modules").symlink_to(HERE / "node_modules", target_is_directory=True)
    return stage


def test_the_runtime_is_the_generators_version() -> None:
    # protoc-gen-es output is meant for the @bufbuild/protobuf release of the same version.
    generator = locked_version(ROOT / "tools" / "proto" / "package-lock.json", "@bufbuild/protoc-gen-es")
    assert locked_version(HERE / "package-lock.json", "@bufbuild/protobuf") == generator


def test_the_stubs_and_the_client_type_check(staged: Path) -> None:
    result = subprocess.run(
        [str(staged / "node_modules" / ".bin" / "tsc"), "-p", str(staged)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


async def run_client(staged: Path, jobwire: Running) -> Any:
    process = await asyncio.create_subprocess_exec(
        str(staged / "node_modules" / ".bin" / "tsx"), str(staged / "client.ts"),
        f"http://{jobwire.server.grpc_target}", jobwire.keys["client"], ENDPOINT,
        cwd=staged, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, f"{out.decode()}\n{err.decode()}"
    return json.loads(out)


async def test_run_status_and_health_over_grpc(staged: Path, jobwire: Running) -> None:
    result = await run_client(staged, jobwire)

    job_id = result["run"]["id"]
    assert result["run"]["status"] == "IN_QUEUE"
    assert result["status"] == {"id": job_id, "status": "IN_QUEUE"}
    assert result["health"]["jobs"] == {
        "completed": 0, "failed": 0, "inProgress": 0, "inQueue": 1, "retried": 0,
    }  # fmt: skip
    assert set(result["health"]["workers"]) == {
        "idle", "initializing", "ready", "running", "throttled", "unhealthy",
    }  # fmt: skip
    assert result["missingJob"] == "NotFound"
    assert result["badKey"] == "Unauthenticated"

    # The Python stubs see the same job, and a worker gets the input bytes the TypeScript client encoded.
    status = await jobwire.stub.Status(
        jobs_pb2.StatusRequest(endpoint_id=ENDPOINT, job_id=job_id), metadata=jobwire.metadata()
    )
    assert status.job.id == job_id
    taken = await jobwire.http.get(f"/v2/{ENDPOINT}/job-take/ts-worker", headers=jobwire.headers("worker"))
    assert taken.status_code == 200, taken.text
    assert taken.json() == {"id": job_id, "input": {"prompt": "hello from TypeScript", "n": 42}}
