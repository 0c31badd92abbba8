"""Generator handlers: ordered chunks, strings split at the server's chunk limit, aggregation, errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

from jobwire.v1 import worker_pb2
from worker.fake_server import WELCOME, FakeStream, FakeWorkerService, make_worker, running


def _welcome(max_chunk_bytes: int) -> worker_pb2.Welcome:
    welcome = worker_pb2.Welcome()
    welcome.CopyFrom(WELCOME)
    welcome.max_chunk_bytes = max_chunk_bytes
    return welcome


async def _stream_of(service: FakeWorkerService, address: str, handler: Any, **options: Any) -> FakeStream:
    worker = make_worker(handler, address, **options)
    async with running(worker):
        stream = await service.stream()
        stream.assign("g", {"count": 3})
        await stream.until(lambda s: s.settled("g"))
    return stream


def _outputs(stream: FakeStream) -> list[object]:
    return [json.loads(c.output) for c in stream.chunks("g")]


def counting(job: dict[str, Any]) -> Iterator[object]:
    for i in range(job["input"]["count"]):
        yield {"token": i}


async def async_counting(job: dict[str, Any]) -> AsyncIterator[object]:
    for i in range(job["input"]["count"]):
        yield {"token": i}


async def test_chunks_are_numbered_in_order(service: FakeWorkerService, address: str) -> None:
    for handler in (counting, async_counting):
        service.streams.clear()
        stream = await _stream_of(service, address, handler)
        assert [c.seq for c in stream.chunks("g")] == [1, 2, 3]
        assert _outputs(stream) == [{"token": 0}, {"token": 1}, {"token": 2}]
        assert json.loads(stream.result("g").output) == []  # Runpod posts [] without aggregation
        assert stream.kinds()[-2:] == ["result", "credit"]


async def test_the_aggregate_stream_is_the_final_output(service: FakeWorkerService, address: str) -> None:
    stream = await _stream_of(service, address, async_counting, return_aggregate_stream=True)
    assert json.loads(stream.result("g").output) == [{"token": 0}, {"token": 1}, {"token": 2}]


async def test_a_long_string_is_split_at_the_chunk_limit(service: FakeWorkerService, address: str) -> None:
    text = 'ab"cé€😀\n' * 5  # escapes and 1- to 4-byte characters

    def handler(job: dict[str, Any]) -> Iterator[object]:
        yield "short"
        yield text

    service.welcome = _welcome(16)
    stream = await _stream_of(service, address, handler, return_aggregate_stream=True)
    chunks = stream.chunks("g")
    assert all(len(c.output) <= 16 for c in chunks)
    pieces = [json.loads(c.output) for c in chunks]
    assert pieces[0] == "short" and "".join(pieces[1:]) == text and len(pieces) > 3
    assert [c.seq for c in chunks] == list(range(1, len(chunks) + 1))
    assert json.loads(stream.result("g").output) == ["short", text]  # the values as yielded


async def test_a_value_over_the_chunk_limit_fails_the_job(service: FakeWorkerService, address: str) -> None:
    def handler(job: dict[str, Any]) -> Iterator[object]:
        yield 1
        yield {"big": "x" * 100}
        yield 3  # never reached: the generator is stopped

    service.welcome = _welcome(32)
    stream = await _stream_of(service, address, handler)
    result = stream.result("g")
    assert "over the server's chunk limit of 32 bytes" in result.error and not result.output
    assert _outputs(stream) == [1]


async def test_a_yielded_error_ends_the_job_failed(service: FakeWorkerService, address: str) -> None:
    closed: list[bool] = []

    async def handler(job: dict[str, Any]) -> AsyncIterator[object]:
        try:
            yield "first"
            yield {"error": "model exploded"}
            yield "never"
        finally:
            closed.append(True)

    stream = await _stream_of(service, address, handler)
    assert stream.result("g").error == "model exploded"
    assert _outputs(stream) == ["first"]  # nothing posted for the error itself
    assert closed == [True]


async def test_a_generator_that_raises_fails_the_job(service: FakeWorkerService, address: str) -> None:
    def handler(job: dict[str, Any]) -> Iterator[object]:
        yield 1
        raise RuntimeError("halfway")

    stream = await _stream_of(service, address, handler)
    error = json.loads(stream.result("g").error)
    assert error["error_type"] == "<class 'RuntimeError'>" and error["error_message"] == "halfway"
    assert _outputs(stream) == [1]
