"""A fake WorkerService on a real gRPC server on loopback, for testing the worker SDK.

It records everything a worker sends and lets a test push Assign, CancelJob and Drain. Like the real
server it never has more unfinished assignments out than the worker's free slots: Hello's `slots`, plus
every Credit since; an Assign pushed beyond that waits for a Credit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc

from jobwire.v1 import worker_pb2, worker_pb2_grpc
from jobwire.worker import Backoff, Worker
from jobwire.worker._runner import Handler

MIB = 1024 * 1024
#: Long heartbeats by default, so that tests that do not look at them do not see them.
WELCOME = worker_pb2.Welcome(
    session_id="session-1",
    heartbeat_interval_ms=60_000,
    lease_ms=120_000,
    max_message_bytes=32 * MIB,
    max_chunk_bytes=MIB,
)
#: How long a test waits for something the worker should do at once.
PATIENCE = 2.0


@dataclass(frozen=True)
class _Abort:
    code: grpc.StatusCode
    details: str


class FakeStream:
    """One worker stream, as the server sees it."""

    def __init__(self, metadata: dict[str, str]) -> None:
        self.metadata = metadata
        self.received: list[worker_pb2.ConnectRequest] = []
        #: The size in bytes of each batch the worker sent (their messages are in `received`).
        self.batch_bytes: list[int] = []
        self.free = 0
        #: The most assignments that were ever unfinished at once (from the credits' point of view).
        self.most_outstanding = 0
        self.ended = asyncio.Event()
        self.outbox: asyncio.Queue[worker_pb2.ConnectResponse | _Abort] = asyncio.Queue()
        self._slots = 0
        self._pending: deque[worker_pb2.Assign] = deque()
        self._changed = asyncio.Condition()

    # -- what the test does --------------------------------------------------------------------------

    def assign(self, job_id: str, job_input: object = None, *, attempt: int = 1, **fields: object) -> None:
        """Assigns a job (its input as JSON) now, or as soon as the worker has a free slot."""
        raw = json.dumps({"n": 1} if job_input is None else job_input).encode()
        self._pending.append(worker_pb2.Assign(job_id=job_id, attempt=attempt, input=raw, **fields))  # type: ignore[arg-type]
        self._pump()

    def cancel(self, job_id: str, *, attempt: int = 1, reason: str = "CANCELLED") -> None:
        cancel = worker_pb2.CancelJob(job_id=job_id, attempt=attempt, reason=reason)
        self.outbox.put_nowait(worker_pb2.ConnectResponse(cancel=cancel))

    def drain(self) -> None:
        self.outbox.put_nowait(worker_pb2.ConnectResponse(drain=worker_pb2.Drain()))

    def abort(self, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE, details: str = "going away") -> None:
        """Ends the stream with an error status, as a server shutting down does."""
        self.outbox.put_nowait(_Abort(code, details))

    async def until(self, predicate: Callable[[FakeStream], bool], patience: float = PATIENCE) -> None:
        """Waits until `predicate(self)` holds, re-checking after every message from the worker."""
        async with asyncio.timeout(patience), self._changed:
            await self._changed.wait_for(lambda: predicate(self))

    # -- what the worker sent ------------------------------------------------------------------------

    def kinds(self) -> list[str]:
        return [str(m.WhichOneof("message")) for m in self.received]

    @property
    def hello(self) -> worker_pb2.Hello:
        assert self.received and self.received[0].HasField("hello")
        return self.received[0].hello

    def results(self) -> list[worker_pb2.Result]:
        return [m.result for m in self.received if m.HasField("result")]

    def result(self, job_id: str) -> worker_pb2.Result:
        (found,) = [r for r in self.results() if r.job_id == job_id]
        return found

    def chunks(self, job_id: str) -> list[worker_pb2.OutputChunk]:
        return [m.chunk for m in self.received if m.HasField("chunk") and m.chunk.job_id == job_id]

    def progress(self, job_id: str) -> list[object]:
        return [
            json.loads(m.progress.output)
            for m in self.received
            if m.HasField("progress") and m.progress.job_id == job_id
        ]

    def heartbeats(self) -> list[worker_pb2.Heartbeat]:
        return [m.heartbeat for m in self.received if m.HasField("heartbeat")]

    def credits(self) -> int:
        return sum(m.credit.slots for m in self.received if m.HasField("credit"))

    def has_result(self, job_id: str) -> bool:
        return any(r.job_id == job_id for r in self.results())

    def settled(self, job_id: str) -> bool:
        """The job's Result came, and the Credit for its slot after it."""
        kinds = self.kinds()
        for i, message in enumerate(self.received):
            if message.HasField("result") and message.result.job_id == job_id:
                return "credit" in kinds[i + 1 :]
        return False

    # -- the server side -----------------------------------------------------------------------------

    def assign_together(self, jobs: dict[str, object]) -> None:
        """Assigns the jobs (id -> input) in one ConnectResponseBatch, free slots or not."""
        assigns = [
            worker_pb2.ConnectResponse(
                assign=worker_pb2.Assign(job_id=job_id, attempt=1, input=json.dumps(job_input).encode())
            )
            for job_id, job_input in jobs.items()
        ]
        self.free -= len(assigns)
        batch = worker_pb2.ConnectResponseBatch(messages=assigns)
        self.outbox.put_nowait(worker_pb2.ConnectResponse(batch=batch))

    async def record(self, message: worker_pb2.ConnectRequest) -> None:
        if message.HasField("batch"):
            self.batch_bytes.append(message.ByteSize())
            for inner in message.batch.messages:
                await self.record(inner)
            return
        self.received.append(message)
        if message.HasField("hello"):
            self._slots = self.free = message.hello.slots
        elif message.HasField("credit"):
            self.free += message.credit.slots
        self._pump()
        async with self._changed:
            self._changed.notify_all()

    async def finish(self) -> None:
        self.ended.set()
        async with self._changed:
            self._changed.notify_all()

    def _pump(self) -> None:
        while self._pending and self.free > 0:
            self.free -= 1
            self.most_outstanding = max(self.most_outstanding, self._slots - self.free)
            self.outbox.put_nowait(worker_pb2.ConnectResponse(assign=self._pending.popleft()))


class FakeWorkerService(worker_pb2_grpc.WorkerServiceServicer):
    """The servicer; `refuse` makes it end every stream with that status after Hello."""

    def __init__(self) -> None:
        self.welcome = WELCOME
        self.refuse: grpc.StatusCode | None = None
        self.streams: list[FakeStream] = []
        self._connected = asyncio.Condition()

    async def stream(self, index: int = 0, patience: float = PATIENCE) -> FakeStream:
        """The `index`-th stream (from 0) once it said Hello."""
        async with asyncio.timeout(patience), self._connected:
            await self._connected.wait_for(lambda: len(self.streams) > index)
        stream = self.streams[index]
        await stream.until(lambda s: bool(s.received))
        return stream

    async def Connect(
        self,
        request_iterator: AsyncIterator[worker_pb2.ConnectRequest],
        context: grpc.aio.ServicerContext[worker_pb2.ConnectRequest, worker_pb2.ConnectResponse],
    ) -> AsyncIterator[worker_pb2.ConnectResponse]:
        stream = FakeStream({k: str(v) for k, v in context.invocation_metadata() or ()})
        async with self._connected:
            self.streams.append(stream)
            self._connected.notify_all()
        reader = asyncio.create_task(self._read(request_iterator, stream))
        try:
            await stream.until(lambda s: bool(s.received))
            if self.refuse is not None:
                await context.abort(self.refuse, "refused by the fake")
            yield worker_pb2.ConnectResponse(welcome=self.welcome)
            while (item := await self._next(stream, reader)) is not None:
                if isinstance(item, _Abort):
                    await context.abort(item.code, item.details)
                yield item
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            await stream.finish()

    @staticmethod
    async def _read(requests: AsyncIterator[worker_pb2.ConnectRequest], stream: FakeStream) -> None:
        async for message in requests:
            await stream.record(message)

    @staticmethod
    async def _next(
        stream: FakeStream, reader: asyncio.Task[None]
    ) -> worker_pb2.ConnectResponse | _Abort | None:
        """The next message to send, or None once the worker half-closed (the server then ends too)."""
        getting = asyncio.ensure_future(stream.outbox.get())
        try:
            await asyncio.wait({getting, reader}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not getting.done():
                getting.cancel()
                return None  # noqa: B012 (cancelled or not, nothing more is sent)
        return getting.result()


@contextlib.asynccontextmanager
async def serving(service: FakeWorkerService, port: int = 0) -> AsyncIterator[str]:
    """Serves `service` on 127.0.0.1 (a free port unless given); yields host:port."""
    server = grpc.aio.server()
    worker_pb2_grpc.add_WorkerServiceServicer_to_server(service, server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    try:
        yield f"127.0.0.1:{bound}"
    finally:
        await server.stop(grace=None)


class RecordedSleep:
    """An injected backoff sleep: records each delay and returns at once.

    With `hold=True`, each sleep instead waits for a `release()`, so a test decides when the worker
    tries again.
    """

    def __init__(self, *, hold: bool = False) -> None:
        self.delays: list[float] = []
        self._permits = asyncio.Semaphore(0) if hold else None

    def release(self) -> None:
        assert self._permits is not None
        self._permits.release()

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        if self._permits is not None:
            await self._permits.acquire()
        await asyncio.sleep(0)


def make_worker(
    handler: Handler, address: str, sleep: RecordedSleep | None = None, **options: object
) -> Worker:
    """A Worker for `address` whose backoff never really sleeps. Without prefetch unless asked: the
    tests count credits, and a fast handler would make `auto` ask for more."""
    backoff = Backoff(sleep=sleep or RecordedSleep(), random=lambda: 0.5)
    options.setdefault("prefetch", 0)
    return Worker(handler, endpoint="ep", key="wk", server=address, backoff=backoff, **options)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[asyncio.Task[None]]:
    """Runs the worker in a task; at the end, cancels it if still running."""
    task = asyncio.create_task(worker.run())
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
