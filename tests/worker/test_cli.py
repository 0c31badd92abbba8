"""`python -m jobwire.worker` in a real process: --help, usage errors, SIGTERM draining, a refusal."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import grpc
import pytest

from jobwire.worker.__main__ import EXIT_REJECTED, load_handler, main
from worker.fake_server import FakeWorkerService

# A fresh interpreter imports grpc first: allow it some time on a slow machine.
STARTUP = 10.0

HANDLER = """
import time

from jobwire.worker import progress_update


def handler(job):
    progress_update(job, "started")
    time.sleep(0.2)
    return {"done": job["input"]}
"""


async def _spawn(*args: str, cwd: Path | None = None, key: str | None = "wk") -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if k != "JOBWIRE_WORKER_KEY"}
    if key is not None:
        env["JOBWIRE_WORKER_KEY"] = key
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "jobwire.worker",
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _exit(process: asyncio.subprocess.Process) -> tuple[int, str]:
    try:
        out, err = await asyncio.wait_for(process.communicate(), STARTUP)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, (out + err).decode()


async def test_help_exits_zero() -> None:
    code, output = await _exit(await _spawn("--help"))
    assert code == 0
    assert "MODULE:FUNCTION" in output and "--endpoint" in output and "--aggregate-stream" in output


async def test_a_missing_key_is_a_usage_error() -> None:
    code, output = await _exit(await _spawn("mod:fn", "--endpoint", "ep", key=None))
    assert code == 2 and "--key or $JOBWIRE_WORKER_KEY is required" in output


async def test_sigterm_drains_the_running_job(
    service: FakeWorkerService, address: str, tmp_path: Path
) -> None:
    (tmp_path / "my_handler.py").write_text(HANDLER)
    process = await _spawn(
        "my_handler:handler", "--endpoint", "ep", "--server", address, "--worker-id", "w-cli", cwd=tmp_path
    )
    try:
        stream = await service.stream(patience=STARTUP)
        assert stream.hello.worker_id == "w-cli" and stream.metadata["authorization"] == "Bearer wk"
        stream.assign("j", {"x": 1})
        await stream.until(lambda s: s.progress("j") == ["started"])
        process.send_signal(signal.SIGTERM)
        await stream.until(lambda s: any(h.draining for h in s.heartbeats()))
        await stream.until(lambda s: s.settled("j"))
        code, output = await _exit(process)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert code == 0, output
    assert stream.result("j").output == b'{"done":{"x":1}}'
    assert "SIGTERM: draining" in output
    await stream.until(lambda s: s.ended.is_set())


async def test_a_refused_worker_exits_77(service: FakeWorkerService, address: str, tmp_path: Path) -> None:
    (tmp_path / "my_handler.py").write_text(HANDLER)
    service.refuse = grpc.StatusCode.UNAUTHENTICATED
    process = await _spawn("my_handler:handler", "--endpoint", "ep", "--server", address, cwd=tmp_path)
    code, output = await _exit(process)
    assert code == EXIT_REJECTED and "UNAUTHENTICATED" in output
    assert len(service.streams) == 1


def test_load_handler() -> None:
    loaded: list[object] = [load_handler("json:dumps"), load_handler("os.path:join")]
    assert loaded == [json.dumps, os.path.join]
    with pytest.raises(ValueError, match="MODULE:FUNCTION"):
        load_handler("json")
    with pytest.raises(AttributeError):
        load_handler("json:nope")
    with pytest.raises(ValueError, match="not callable"):
        load_handler("sys:version")


def test_main_reports_a_handler_that_does_not_load(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))  # main() may add the working directory
    with pytest.raises(SystemExit) as exit_:
        main(["no_such_module_here:fn", "--endpoint", "ep", "--key", "k"], prog="jobwire worker")
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: jobwire worker") and "cannot load the handler" in err


@pytest.mark.parametrize("prefetch", ["7", "-1"])
def test_a_prefetch_out_of_range_is_a_usage_error(prefetch: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["m:f", "--endpoint", "ep", "--key", "k", "--concurrency", "2", "--prefetch", prefetch])
    assert exit_.value.code == 2
    assert "--prefetch: prefetch must be 'auto' or a whole number from 0 to 3 x concurrency (6)" in (
        capsys.readouterr().err
    )
