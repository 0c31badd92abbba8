"""Runs one attempt with the user's handler, whatever its kind, and says how it ended."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

from jobwire.v1 import worker_pb2
from jobwire.worker._context import JobContext
from jobwire.worker._outcome import (
    ChunkTooLarge,
    Outcome,
    chunk_payloads,
    dumps,
    error_report,
    from_return,
    job_dict,
    stream_error,
)
from jobwire.worker._threads import GeneratorPump, in_thread

#: A Runpod handler: takes the job dict; returns, yields, or (async) awaits its output.
Handler = Callable[[dict[str, Any]], Any]
#: Where the runner sends each chunk payload of a streaming handler.
Emit = Callable[[bytes], None]


class Kind(enum.Enum):
    FUNCTION = "sync function"
    COROUTINE = "async function"
    GENERATOR = "sync generator"
    ASYNC_GENERATOR = "async generator"

    @property
    def is_async(self) -> bool:
        """Runs on the event loop, so a cancellation can interrupt it."""
        return self in (Kind.COROUTINE, Kind.ASYNC_GENERATOR)


def kind_of(handler: Handler) -> Kind:
    """The handler's kind; callable objects are judged by their `__call__`."""
    for candidate in (handler, getattr(handler, "__call__", None)):  # noqa: B004 (the method, not a test)
        if inspect.isasyncgenfunction(candidate):
            return Kind.ASYNC_GENERATOR
        if inspect.iscoroutinefunction(candidate):
            return Kind.COROUTINE
        if inspect.isgeneratorfunction(candidate):
            return Kind.GENERATOR
    return Kind.FUNCTION


class Runner:
    """Calls the handler for an attempt and maps what it does to an `Outcome`, as Runpod's worker does."""

    def __init__(self, handler: Handler, *, worker_id: str, aggregate_stream: bool) -> None:
        if not callable(handler):
            raise TypeError(f"the handler must be callable, not {type(handler).__name__}")
        self.kind = kind_of(handler)
        self._handler = handler
        self._worker_id = worker_id
        self._aggregate = aggregate_stream

    async def run(self, assign: worker_pb2.Assign, ctx: JobContext, emit: Emit, chunk_limit: int) -> Outcome:
        """Runs the attempt. Async kinds raise CancelledError when cancelled; sync kinds return once their
        thread stopped, whatever they produced (a cancelled attempt's outcome is not reported)."""
        try:
            job = job_dict(assign)
            if self.kind is Kind.FUNCTION:
                return await self._function(job)
            if self.kind is Kind.COROUTINE:
                return from_return(await self._handler(job))
            if self.kind is Kind.GENERATOR:
                return await self._generator(job, ctx, emit, chunk_limit)
            async with contextlib.aclosing(self._handler(job)) as stream:
                return await self._consume(stream, emit, chunk_limit)
        except ChunkTooLarge as exc:
            return Outcome(error=str(exc))
        except Exception as exc:
            return Outcome(error=error_report(exc, self._worker_id))

    async def _function(self, job: dict[str, Any]) -> Outcome:
        finished = await in_thread(functools.partial(self._handler, job), _thread_name(job))
        if finished.error is not None:
            return Outcome(error=error_report(finished.error, self._worker_id))
        value = finished.value
        if inspect.isawaitable(value):  # Runpod awaits what a plain function returns, if awaitable
            value = await value
        return from_return(value)

    async def _generator(self, job: dict[str, Any], ctx: JobContext, emit: Emit, chunk_limit: int) -> Outcome:
        pump = GeneratorPump(functools.partial(self._handler, job), lambda: ctx.cancelled, _thread_name(job))
        try:
            outcome = await self._consume(pump, emit, chunk_limit)
        except asyncio.CancelledError:
            pump.stop()
            raise
        except Exception:
            pump.stop()
            await pump.finished
            raise
        pump.stop()
        await pump.finished  # the generator really stopped: only then is its slot free
        return outcome

    async def _consume(self, items: AsyncIterator[object], emit: Emit, chunk_limit: int) -> Outcome:
        yielded: list[object] = []
        async for item in items:
            error = stream_error(item)
            if error is not None:
                return Outcome(error=error)
            for payload in chunk_payloads(item, chunk_limit):
                emit(payload)
            if self._aggregate:
                yielded.append(item)
        # Runpod's worker posts the aggregate, or an empty list, as the final output of a stream.
        return Outcome(output=dumps(yielded))


def _thread_name(job: dict[str, Any]) -> str:
    return f"jobwire-job-{job['id']}"
