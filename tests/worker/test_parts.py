"""The SDK's parts on their own: Runpod's outcome mapping, string splitting, backoff, credentials,
handler kinds, accelerator discovery, and the job context outside a job."""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import json
import logging
import random
import sys
import types
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from jobwire.worker import Backoff, JobCancelled, context, progress_update
from jobwire.worker._accelerators import Accelerator, detect_accelerators
from jobwire.worker._channel import authorization
from jobwire.worker._context import JobContext
from jobwire.worker._outcome import (
    ChunkTooLarge,
    Outcome,
    chunk_payloads,
    error_report,
    from_return,
    split_string,
)
from jobwire.worker._runner import Kind, kind_of
from worker.fake_server import FakeWorkerService, make_worker, running


@pytest.mark.parametrize(
    ("returned", "expected"),
    [
        ({"a": 1}, Outcome(output=b'{"a":1}')),
        ("héllo", Outcome(output='"héllo"'.encode())),
        ([1, None], Outcome(output=b"[1,null]")),
        (False, Outcome(output=b"false")),
        (None, Outcome()),
        ({"error": "boom"}, Outcome(error="boom")),
        ({"error": {"code": 3}, "x": 1}, Outcome(output=b'{"x":1}', error="{'code': 3}")),
        ({"error": "", "x": 1}, Outcome(output=b'{"x":1}')),  # a falsy error is dropped, as by Runpod
        ({"refresh_worker": True, "x": 1}, Outcome(output=b'{"x":1}', refresh=True)),
        ({}, Outcome()),
    ],
)
def test_returned_values_map_as_runpod_maps_them(returned: object, expected: Outcome) -> None:
    assert from_return(returned) == expected


def test_from_return_leaves_the_handlers_dict_alone() -> None:
    returned = {"error": "e", "refresh_worker": True, "x": 1}
    from_return(returned)
    assert returned == {"error": "e", "refresh_worker": True, "x": 1}


def test_error_report_has_runpods_fields() -> None:
    try:
        raise KeyError("missing")
    except KeyError as exc:
        report = json.loads(error_report(exc, "w-1"))
    assert report["error_type"] == "<class 'KeyError'>"
    assert report["error_message"] == "'missing'"
    assert (
        report["error_traceback"].startswith("Traceback")
        and "KeyError: 'missing'" in report["error_traceback"]
    )
    assert report["worker_id"] == "w-1" and report["hostname"]


@pytest.mark.parametrize("limit", [8, 9, 16, 64, 1000])
def test_split_strings_fit_the_limit_and_rejoin(limit: int) -> None:
    rng = random.Random(limit)
    alphabet = 'aZ0 "\\\n\t\x01é€😀'
    for _ in range(20):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 300)))
        pieces = list(split_string(text, limit))
        assert "".join(pieces) == text
        encoded = [json.dumps(p, ensure_ascii=False, separators=(",", ":")).encode() for p in pieces]
        assert all(len(e) <= limit for e in encoded)
        assert all(pieces)


def test_chunk_payloads() -> None:
    assert chunk_payloads({"t": "é"}, 10) == ['{"t":"é"}'.encode()]
    assert chunk_payloads("abcdef", 5) == [b'"abc"', b'"def"']
    with pytest.raises(ChunkTooLarge, match="encodes to 12 bytes, over the server's chunk limit of 10"):
        chunk_payloads([1234567890], 10)


def test_backoff_doubles_up_to_the_cap_with_full_jitter() -> None:
    backoff = Backoff(base=0.1, cap=1.0, random=lambda: 1.0)
    assert [round(backoff.next_delay(), 3) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    backoff.reset()
    assert backoff.next_delay() == 0.1
    for _ in range(2000):  # no overflow however long the server stays away
        backoff.next_delay()
    assert backoff.next_delay() == 1.0
    draws = iter([0.0, 0.25])
    jittered = Backoff(random=lambda: next(draws))
    assert [jittered.next_delay(), jittered.next_delay()] == [0.0, 0.05]
    with pytest.raises(ValueError, match="base"):
        Backoff(base=1.0, cap=0.5)


async def test_backoff_wait_uses_the_injected_sleep() -> None:
    slept: list[float] = []

    async def sleep(delay: float) -> None:
        slept.append(delay)

    backoff = Backoff(sleep=sleep, random=lambda: 0.5)
    assert [await backoff.wait(), await backoff.wait()] == [0.05, 0.1]
    assert slept == [0.05, 0.1]


@pytest.mark.parametrize(
    ("key", "header"),
    [
        ("jw_abc", "Bearer jw_abc"),
        (" jw_abc\n", "Bearer jw_abc"),
        ("Bearer jw_abc", "Bearer jw_abc"),
        ("bearer jw_abc", "bearer jw_abc"),
        ("Basic dXNlcjpwYXNz", "Basic dXNlcjpwYXNz"),
    ],
)
def test_authorization_adds_bearer_unless_a_scheme_is_given(key: str, header: str) -> None:
    assert authorization(key) == header


def _function(job: dict[str, Any]) -> object:
    return job


async def _coroutine(job: dict[str, Any]) -> object:
    return job


def _generator(job: dict[str, Any]) -> Iterator[object]:
    yield job


async def _async_generator(job: dict[str, Any]) -> AsyncIterator[object]:
    yield job


class _AsyncCallable:
    async def __call__(self, job: dict[str, Any]) -> object:
        return job


def test_handler_kinds() -> None:
    assert kind_of(_function) is Kind.FUNCTION
    assert kind_of(_coroutine) is Kind.COROUTINE
    assert kind_of(_generator) is Kind.GENERATOR
    assert kind_of(_async_generator) is Kind.ASYNC_GENERATOR
    assert kind_of(functools.partial(_coroutine)) is Kind.COROUTINE
    assert kind_of(_AsyncCallable()) is Kind.COROUTINE
    assert kind_of(print) is Kind.FUNCTION


def test_without_nvml_there_is_no_accelerator(monkeypatch: pytest.MonkeyPatch) -> None:
    assert importlib.util.find_spec("pynvml") is None  # not installed here: the real absent path
    assert detect_accelerators() == []
    monkeypatch.setitem(sys.modules, "pynvml", None)  # an import that fails even if installed
    assert detect_accelerators() == []


def _fake_nvml(*, init_fails: bool = False) -> types.ModuleType:
    nvml = types.ModuleType("pynvml")
    calls: list[str] = []

    def init() -> None:
        calls.append("init")
        if init_fails:
            raise OSError("NVML Shared Library Not Found")

    nvml.nvmlInit = init  # type: ignore[attr-defined]
    nvml.nvmlShutdown = lambda: calls.append("shutdown")  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetCount = lambda: 2  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetName = lambda h: [b"NVIDIA A100", "NVIDIA L4"][h]  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetUUID = lambda h: f"GPU-{h}"  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=(h + 1) * 2**30)  # type: ignore[attr-defined]
    nvml.calls = calls  # type: ignore[attr-defined]
    return nvml


def test_nvml_devices_when_it_is_there(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = _fake_nvml()
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    assert detect_accelerators() == [
        Accelerator("NVIDIA A100", "GPU-0", 2**30),
        Accelerator("NVIDIA L4", "GPU-1", 2**31),
    ]
    assert nvml.calls == ["init", "shutdown"]
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml(init_fails=True))
    assert detect_accelerators() == []


async def test_hello_carries_the_accelerators(
    service: FakeWorkerService, address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml())
    async with running(make_worker(_function, address)):
        hello = (await service.stream()).hello
    assert [(a.name, a.uuid, a.memory_bytes) for a in hello.accelerators] == [
        ("NVIDIA A100", "GPU-0", 2**30),
        ("NVIDIA L4", "GPU-1", 2**31),
    ]


def test_the_context_outside_a_job(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(RuntimeError, match="only available inside a job handler"):
        context()
    with caplog.at_level(logging.WARNING, "jobwire.worker"):
        progress_update({"id": "nope"}, 1)  # never raises, as Runpod's
    assert "not running here" in caplog.text


def test_a_job_context_on_its_own() -> None:
    sent: list[bytes] = []
    ctx = JobContext("j", 2, sent.append)
    ctx.progress({"p": "é"})
    ctx.raise_if_cancelled()
    assert not ctx.wait_cancelled(0) and ctx.cancel_reason is None
    assert ctx._cancel("TIMED_OUT") and not ctx._cancel("CANCELLED")
    assert ctx.cancelled and ctx.cancel_reason == "TIMED_OUT" and ctx.wait_cancelled(0)
    ctx.progress("dropped")
    assert sent == ['{"p":"é"}'.encode()]
    with pytest.raises(JobCancelled, match="job j attempt 2 was cancelled"):
        ctx.raise_if_cancelled()
    with pytest.raises(TypeError):
        ctx.progress(object())  # not JSON: the handler learns at once


def test_worker_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        make_worker(_function, "127.0.0.1:1", concurrency=0)
    with pytest.raises(ValueError, match="stuck_after"):
        make_worker(_function, "127.0.0.1:1", stuck_after=0)
    with pytest.raises(TypeError, match="callable"):
        make_worker("not a handler", "127.0.0.1:1")  # type: ignore[arg-type]


async def test_a_worker_runs_once_at_a_time() -> None:
    worker = make_worker(_function, "127.0.0.1:1")
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="already running"):
        await worker.run()
    worker.drain()
    await asyncio.wait_for(task, 2)
