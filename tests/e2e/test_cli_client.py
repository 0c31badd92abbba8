"""The `jobwire` client commands (submit, status, cancel, retry, purge, health) as real processes against a
live server, with an in-process worker where a job has to run."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from jobwire.server.cli.follow import progress_percent
from jobwire.worker import Handler, Worker, progress_update
from server_fixtures import ENDPOINT, Running

JOBWIRE = [sys.executable, "-m", "jobwire.server"]


class Cli:
    """Runs `jobwire ...` against one server, with its URL and client key in the environment."""

    def __init__(self, service: Running) -> None:
        self.env = {
            **os.environ,
            "JOBWIRE_URL": service.server.http_url,
            "JOBWIRE_API_KEY": service.keys["client"],
            "COLUMNS": "200",
        }

    async def start(self, *args: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *JOBWIRE, *args, env=self.env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip

    async def __call__(self, *args: str, stdin: str = "") -> tuple[int, str, str]:
        process = await self.start(*args)
        out, err = await asyncio.wait_for(process.communicate(stdin.encode()), timeout=60)
        return process.returncode or 0, out.decode(), err.decode()


@pytest.fixture
def cli(jobwire: Running) -> Cli:
    return Cli(jobwire)


@pytest.fixture
async def serve_with() -> AsyncIterator[Callable[[Running, Handler], None]]:
    """Starts in-process workers of `ep` with a handler; drains them at the end."""
    running: list[tuple[Worker, asyncio.Task[None]]] = []

    def start(service: Running, handler: Handler) -> None:
        worker = Worker(
            handler, endpoint=ENDPOINT, key=service.keys["worker"], server=service.server.grpc_target
        )
        running.append((worker, asyncio.create_task(worker.run())))

    yield start
    for worker, task in running:
        worker.drain()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, timeout=30)


def add(job: dict[str, Any]) -> dict[str, Any]:
    data = job["input"]
    if data.get("fail"):
        raise ValueError("boom")
    return {"sum": data["a"] + data["b"]}


async def tokens(job: dict[str, Any]) -> AsyncIterator[str]:
    for token in job["input"]["tokens"]:
        yield token


async def status_of(service: Running, job_id: str) -> dict[str, Any]:
    response = await service.http.get(f"/v2/{ENDPOINT}/status/{job_id}", headers=service.headers())
    return dict(response.json())


# --- submit -------------------------------------------------------------------------------------------------


async def test_submit_prints_the_bare_id_and_status_shows_the_queued_job(cli: Cli, jobwire: Running) -> None:
    code, out, err = await cli("submit", ENDPOINT, '{"a": 1}')
    assert code == 0 and "submitted job" in err
    job_id = out.strip()
    assert (await status_of(jobwire, job_id))["status"] == "IN_QUEUE"
    code, out, _ = await cli("status", ENDPOINT, job_id, "--json")
    assert code == 0 and json.loads(out) == {"id": job_id, "status": "IN_QUEUE"}
    code, out, _ = await cli("status", ENDPOINT, job_id)
    assert code == 0 and job_id in out and "IN_QUEUE" in out


async def test_submit_wait_prints_the_output_from_an_argument_a_file_or_stdin(
    cli: Cli, jobwire: Running, serve_with: Callable[[Running, Handler], None], tmp_path: Path
) -> None:
    serve_with(jobwire, add)
    code, out, err = await cli("submit", ENDPOINT, '{"a": 1, "b": 2}', "--wait")
    assert (code, json.loads(out)) == (0, {"sum": 3}) and "COMPLETED" in err
    (tmp_path / "input.json").write_text('{"a": 2, "b": 2}')
    code, out, _ = await cli("submit", ENDPOINT, f"@{tmp_path / 'input.json'}", "-w")
    assert (code, json.loads(out)) == (0, {"sum": 4})
    code, out, _ = await cli("submit", ENDPOINT, "-", "--wait", "--json", stdin='{"a": 3, "b": 4}')
    job = json.loads(out)
    assert code == 0 and job["status"] == "COMPLETED" and job["output"] == {"sum": 7}
    assert {"id", "delayTime", "executionTime", "workerId"} <= set(job)


async def test_a_failed_job_exits_1_with_its_error(
    cli: Cli, jobwire: Running, serve_with: Callable[[Running, Handler], None]
) -> None:
    serve_with(jobwire, add)
    code, out, err = await cli("submit", ENDPOINT, '{"fail": true}', "--wait")
    assert code == 1 and out == "" and "FAILED" in err and "boom" in err
    job_id = err.split("job ")[1].split()[0]
    code, out, _ = await cli("status", ENDPOINT, job_id, "--json")
    assert code == 1 and json.loads(out)["status"] == "FAILED"
    # retry queues it again under the same id; it fails again.
    code, out, _ = await cli("retry", ENDPOINT, job_id)
    assert code == 0 and job_id in out
    code, _, _ = await cli("status", ENDPOINT, job_id, "--wait")
    assert code == 1


async def test_follow_streams_text_chunks_as_they_come(
    cli: Cli, jobwire: Running, serve_with: Callable[[Running, Handler], None]
) -> None:
    serve_with(jobwire, tokens)
    code, out, err = await cli("submit", ENDPOINT, '{"tokens": ["Hel", "lo, ", "world"]}', "--follow")
    assert code == 0 and out == "Hello, world\n" and "COMPLETED" in err
    code, out, _ = await cli("submit", ENDPOINT, '{"tokens": ["a", "b"]}', "-f", "--json")
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["chunk"]["output"] for e in events[:-1]] == ["a", "b"]
    assert [e["chunk"]["seq"] for e in events[:-1]] == [1, 2]
    assert code == 0 and events[-1]["done"]["status"] == "COMPLETED"


async def test_follow_shows_progress_updates(
    cli: Cli, jobwire: Running, serve_with: Callable[[Running, Handler], None]
) -> None:
    release = asyncio.Event()

    async def slow(job: dict[str, Any]) -> dict[str, Any]:
        progress_update(job, {"pct": 40})
        await release.wait()
        return {"done": True}

    serve_with(jobwire, slow)
    process = await cli.start("submit", ENDPOINT, "{}", "--follow")
    assert process.stderr is not None and process.stdout is not None
    seen = ""
    while "progress" not in seen:  # stderr is not a terminal: one line per update
        line = await asyncio.wait_for(process.stderr.readline(), timeout=60)
        assert line, f"submit ended early: {seen}"
        seen += line.decode()
    assert 'progress: {"pct": 40}' in seen
    release.set()
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0 and json.loads(out) == {"done": True} and "COMPLETED" in err.decode()


async def test_follow_json_has_progress_lines(
    cli: Cli, jobwire: Running, serve_with: Callable[[Running, Handler], None]
) -> None:
    release = asyncio.Event()

    async def slow(job: dict[str, Any]) -> str:
        progress_update(job, "warming up")
        await release.wait()
        return "ok"

    serve_with(jobwire, slow)
    process = await cli.start("submit", ENDPOINT, "{}", "--follow", "--json")
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), timeout=60)
    assert json.loads(line) == {"progress": "warming up"}
    release.set()
    out, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0 and json.loads(out)["done"]["output"] == "ok"


# --- the other commands -------------------------------------------------------------------------------------


async def test_cancel_purge_and_health(cli: Cli, jobwire: Running) -> None:
    first = (await cli("submit", ENDPOINT, "1"))[1].strip()
    code, out, _ = await cli("cancel", ENDPOINT, first)
    assert code == 0 and out.strip() == f"job {first} CANCELLED"
    code, out, _ = await cli("status", ENDPOINT, first)
    assert code == 1 and "CANCELLED" in out  # the job did not complete
    for _ in range(2):
        await cli("submit", ENDPOINT, "2")
    code, out, _ = await cli("health", ENDPOINT, "--json")
    assert code == 0 and json.loads(out)["jobs"]["inQueue"] == 2
    code, out, _ = await cli("health", ENDPOINT)
    assert code == 0 and "inQueue" in out and "workers" in out
    code, out, _ = await cli("purge", ENDPOINT, "--json")
    assert code == 0 and json.loads(out) == {"removed": 2, "status": "completed"}
    code, out, _ = await cli("purge", ENDPOINT)
    assert code == 0 and "removed 0 queued jobs" in out


async def test_refused_requests_exit_1_with_the_servers_error(cli: Cli, jobwire: Running) -> None:
    code, out, err = await cli("status", ENDPOINT, "no-such-job")
    assert code == 1 and out == "" and "error:" in err and "(HTTP 404)" in err
    code, _, err = await cli("submit", ENDPOINT, "{}", "--key", "jw_wrong")
    assert code == 1 and "(HTTP 401)" in err
    job_id = (await cli("submit", ENDPOINT, "{}"))[1].strip()
    code, _, err = await cli("retry", ENDPOINT, job_id)  # a queued job cannot be retried
    assert code == 1 and "(HTTP 400)" in err
    code, _, err = await cli("health", "other")  # the key of `ep` may not read `other`
    assert code == 1 and "(HTTP 403)" in err


async def test_usage_errors_exit_2(cli: Cli) -> None:
    code, _, err = await cli("submit", ENDPOINT, "{not json")
    assert code == 2 and "not JSON" in err
    code, _, err = await cli("submit", ENDPOINT, "@/no/such/file.json")
    assert code == 2 and "cannot read" in err
    assert (await cli("status", ENDPOINT))[0] == 2  # no job id
    code, out, _ = await cli("submit", "--help")
    assert code == 0 and "--follow" in out and "JOBWIRE_URL" in out


async def test_an_unreachable_or_failing_server_exits_3(cli: Cli) -> None:
    async def answer_503(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = b'{"error": "the job store is unavailable; try again"}'
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n")
        writer.write(b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    failing = await asyncio.start_server(answer_503, "127.0.0.1", 0)
    port = failing.sockets[0].getsockname()[1]
    async with failing:
        code, _, err = await cli("health", ENDPOINT, "--url", f"http://127.0.0.1:{port}")
    assert code == 3 and "the job store is unavailable" in err and "(HTTP 503)" in err
    # The port is closed now: nothing answers.
    code, _, err = await cli("health", ENDPOINT, "--url", f"http://127.0.0.1:{port}")
    assert code == 3 and "cannot reach jobwire" in err


@pytest.mark.parametrize(
    ("update", "percent"),
    [
        (40, 40.0),
        (140, 100.0),
        ("25%", 25.0),
        ({"pct": 50}, 50.0),
        ({"percent": 12.5}, 12.5),
        ({"step": 3, "total": 4}, 75.0),
        ({"completed": 1, "total": 0}, None),
        ("warming up", None),
        (True, None),
        ([1, 2], None),
    ],
)
def test_progress_updates_that_read_as_a_percentage(update: object, percent: float | None) -> None:
    assert progress_percent(update) == percent


@pytest.mark.parametrize("module", ["jobwire.server", "jobwire.server.cli"])
async def test_version(module: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, "--version", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    assert process.returncode == 0 and out.decode().startswith("jobwire ")
