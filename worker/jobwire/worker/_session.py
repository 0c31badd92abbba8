"""One Connect stream: Hello and Welcome, then jobs, heartbeats and reports until the stream ends.

A session owns the jobs assigned on its stream. When the stream breaks the server requeues them, so
they are cancelled here (`abandon`) and the next session starts with every slot free.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias

import grpc

from jobwire.v1 import worker_pb2, worker_pb2_grpc
from jobwire.worker._accelerators import Accelerator
from jobwire.worker._context import JobContext, bind
from jobwire.worker._errors import WorkerRejected
from jobwire.worker._lifecycle import Lifecycle
from jobwire.worker._outcome import Outcome
from jobwire.worker._prefetch import Prefetch
from jobwire.worker._runner import Runner
from jobwire.worker._threads import call_soon

log = logging.getLogger("jobwire.worker")

if TYPE_CHECKING:
    _Call: TypeAlias = grpc.aio.StreamStreamCall[worker_pb2.ConnectRequest, worker_pb2.ConnectResponse]

# Statuses that retrying cannot fix: the key, the endpoint or the Hello is wrong, or there is no such
# service. Anything else (UNAVAILABLE above all) is a broken stream, and the worker reconnects.
FATAL_CODES = frozenset(
    {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
# Used when a Welcome leaves a field at 0.
_DEFAULT_HEARTBEAT_MS = 2_000
_DEFAULT_MAX_MESSAGE = 32 * 1024 * 1024
# Room for a report's other fields (job id, attempt, seq, tags) within a message.
_ENVELOPE = 4096
# Reports queued while a write is in flight leave together in one batch of at most this many bytes; a
# bigger report (a large output) goes on its own.
_BATCH_BYTES = 256 * 1024
#: The cancel reason of jobs whose stream was lost.
DISCONNECTED = "DISCONNECTED"


class End(enum.Enum):
    """How a session ended (a refusal raises WorkerRejected instead)."""

    DRAINED = "drained"  # draining, every job done (or stuck): the stream was closed cleanly
    BROKEN = "broken"  # the stream failed, or the server ended it


@dataclass(frozen=True)
class SessionConfig:
    endpoint: str
    worker_id: str
    slots: int
    sdk_version: str
    accelerators: tuple[Accelerator, ...]
    metadata: tuple[tuple[str, str], ...]
    stuck_after: float
    #: How long to wait for the server to end the stream after the worker half-closed it.
    close_timeout: float


@dataclass(eq=False)
class _Job:
    job_id: str
    attempt: int
    context: JobContext
    task: asyncio.Task[None] | None = None
    watchdog: asyncio.Task[None] | None = None
    #: Cancelled, and still running `stuck_after` seconds later.
    stuck: bool = False
    seq: int = 0
    key: tuple[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.key = (self.job_id, self.attempt)


class Session:
    """One stream. Create it on the event loop; `run()` once; `close()` always."""

    def __init__(
        self,
        config: SessionConfig,
        runner: Runner,
        lifecycle: Lifecycle,
        on_welcome: Callable[[], None],
        prefetch: Prefetch | None = None,
    ) -> None:
        self._config = config
        self._runner = runner
        self._lifecycle = lifecycle
        self._on_welcome = on_welcome
        self._prefetch = prefetch or Prefetch(config.slots, 0)
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._outbox: asyncio.Queue[worker_pb2.ConnectRequest | None] = asyncio.Queue()
        #: Every attempt this session holds: running, and (prefetched) waiting for a slot.
        self._jobs: dict[tuple[str, int], _Job] = {}
        self._waiting: deque[tuple[_Job, worker_pb2.Assign]] = deque()
        #: Jobs the server may still send (its credits): the Hello's slots, then each Credit sent.
        self._granted = config.slots
        self._idle = asyncio.Event()
        self._closed = False
        self._call: _Call | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._message_limit = _DEFAULT_MAX_MESSAGE
        self._chunk_limit = _DEFAULT_MAX_MESSAGE - _ENVELOPE
        #: The server reads batches of reports (its Welcome said so).
        self._batches = False
        #: What was taken from the outbox but did not fit in the last batch: the next write starts with it.
        self._carried: list[worker_pb2.ConnectRequest | None] = []

    async def run(self, stub: worker_pb2_grpc.WorkerServiceAsyncStub) -> End:
        """Connects and serves until drained or broken; raises WorkerRejected if the server refuses."""
        call = stub.Connect(metadata=self._config.metadata)
        self._call = call
        writer = self._spawn(self._write(call), "jobwire-writer")
        self._send(worker_pb2.ConnectRequest(hello=self._hello()))
        try:
            first = await call.read()
            if not isinstance(first, worker_pb2.ConnectResponse) or first.WhichOneof("message") != "welcome":
                log.warning("the server did not answer Hello with Welcome: reconnecting")
                return End.BROKEN
            self._welcomed(first.welcome)
            return await self._serve(call, writer)
        except grpc.aio.AioRpcError as exc:
            return self._failed(exc)

    async def abandon(self) -> None:
        """After a broken stream: cancels every job and waits until each stopped or was found stuck."""
        self._closed = True
        for job in list(self._jobs.values()):
            self._stop(job, DISCONNECTED)
        watchdogs = [job.watchdog for job in self._jobs.values() if job.watchdog is not None]
        await asyncio.gather(*watchdogs, return_exceptions=True)

    async def close(self) -> None:
        """Ends everything of the session: its tasks, its jobs' tasks (threads are told), the call."""
        self._closed = True
        self._lifecycle.unlisten(self._on_drain)
        for job in self._jobs.values():
            job.context._cancel(DISCONNECTED)
        job_tasks = [task for job in self._jobs.values() for task in (job.task, job.watchdog) if task]
        await _cancel_all([*self._tasks, *job_tasks])
        if self._call is not None:
            self._call.cancel()

    # -- the stream --------------------------------------------------------------------------------------

    def _hello(self) -> worker_pb2.Hello:
        config = self._config
        return worker_pb2.Hello(
            endpoint_id=config.endpoint,
            worker_id=config.worker_id,
            slots=config.slots,
            accelerators=[
                worker_pb2.Accelerator(name=a.name, uuid=a.uuid, memory_bytes=a.memory_bytes)
                for a in config.accelerators
            ],
            sdk_version=config.sdk_version,
            accepts_batches=True,
            prefetch=self._prefetch.limit,
        )

    def _welcomed(self, welcome: worker_pb2.Welcome) -> None:
        log.info("connected: session %s", welcome.session_id)
        self._message_limit = welcome.max_message_bytes or _DEFAULT_MAX_MESSAGE
        self._chunk_limit = welcome.max_chunk_bytes or self._message_limit - _ENVELOPE
        self._batches = welcome.accepts_batches
        interval = (welcome.heartbeat_interval_ms or _DEFAULT_HEARTBEAT_MS) / 1000
        self._on_welcome()
        self._spawn(self._beat(interval), "jobwire-heartbeat")
        self._lifecycle.listen(self._on_drain)
        if self._lifecycle.draining:
            self._on_drain()

    async def _serve(self, call: _Call, writer: asyncio.Task[None]) -> End:
        reader = self._spawn(self._read(call), "jobwire-reader")
        idle = self._spawn(self._wait_idle(), "jobwire-idle")
        done, _ = await asyncio.wait({reader, idle, writer}, return_when=asyncio.FIRST_COMPLETED)
        if idle in done:
            await self._hang_up(reader)
            return End.DRAINED
        for task in done:
            error = task.exception()
            if isinstance(error, grpc.aio.AioRpcError):
                raise error  # the call's status: run() tells a refusal from a broken stream
            if error is not None:
                log.warning("the stream failed (%r): reconnecting", error)
                return End.BROKEN
        log.warning("the server ended the stream: reconnecting")
        return End.BROKEN

    async def _hang_up(self, reader: asyncio.Task[None]) -> None:
        # Half-close after the last report, then give the server a moment to end the call in turn.
        self._outbox.put_nowait(None)
        self._closed = True
        await asyncio.wait({reader}, timeout=self._config.close_timeout)

    async def _write(self, call: _Call) -> None:
        while True:
            message = self._carried.pop() if self._carried else await self._outbox.get()
            if message is None:
                await call.done_writing()
                return
            await call.write(self._batch(message) if self._batches else message)

    def _batch(self, first: worker_pb2.ConnectRequest) -> worker_pb2.ConnectRequest:
        """`first` and the reports queued behind it, as one batch (no timer: what queued up while the
        last write was in flight)."""
        size = first.ByteSize()
        messages = [first]
        while size < _BATCH_BYTES and not self._outbox.empty():
            message = self._outbox.get_nowait()
            added = 0 if message is None else message.ByteSize()
            if message is None or size + added > _BATCH_BYTES:
                self._carried.append(message)
                break
            size += added
            messages.append(message)
        if len(messages) == 1:
            return first
        return worker_pb2.ConnectRequest(batch=worker_pb2.ConnectRequestBatch(messages=messages))

    async def _read(self, call: _Call) -> None:
        while True:
            message = await call.read()
            if not isinstance(message, worker_pb2.ConnectResponse):  # EOF: the server ended the stream
                return
            self._dispatch(message)

    async def _beat(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self._send(self._heartbeat())

    async def _wait_idle(self) -> None:
        await self._idle.wait()

    def _failed(self, exc: grpc.aio.AioRpcError) -> End:
        code, details = exc.code(), exc.details() or ""
        if code in FATAL_CODES:
            raise WorkerRejected(
                f"the server refused the worker: {code.name}: {details}", code=code, details=details
            ) from exc
        log.warning("the stream broke (%s: %s): reconnecting", code.name, details)
        return End.BROKEN

    def _dispatch(self, message: worker_pb2.ConnectResponse) -> None:
        kind = message.WhichOneof("message")
        if kind == "batch":
            for inner in message.batch.messages:
                if inner.WhichOneof("message") != "batch":  # never nested; ignored if it were
                    self._dispatch(inner)
        elif kind == "assign":
            self._assign(message.assign)
        elif kind == "cancel":
            self._cancel(message.cancel)
        elif kind == "drain":
            log.info("the server asked the worker to drain")
            self._lifecycle.drain()
        else:
            log.debug("ignored a %s message", kind)

    # -- sending -----------------------------------------------------------------------------------------

    def _send(self, message: worker_pb2.ConnectRequest) -> None:
        """Queues a message for the stream (on the loop thread); dropped once the session is closed."""
        if not self._closed:
            self._outbox.put_nowait(message)

    def _post(self, message: worker_pb2.ConnectRequest) -> None:
        """`_send` from any thread, in order with the thread's other posts."""
        if threading.get_ident() == self._loop_thread:
            self._send(message)
        else:
            call_soon(self._loop, self._send, message)

    def _heartbeat(self) -> worker_pb2.ConnectRequest:
        running = [
            worker_pb2.JobAttempt(job_id=job.job_id, attempt=job.attempt)
            for job in self._jobs.values()
            if not job.context.cancelled
        ]
        heartbeat = worker_pb2.Heartbeat(running=running, draining=self._lifecycle.draining)
        return worker_pb2.ConnectRequest(heartbeat=heartbeat)

    def _on_drain(self) -> None:
        # The server must learn at once that no job should come any more.
        self._send(self._heartbeat())
        self._check_idle()

    def _check_idle(self) -> None:
        if self._lifecycle.draining and all(job.stuck for job in self._jobs.values()):
            self._idle.set()

    # -- jobs --------------------------------------------------------------------------------------------

    def _assign(self, assign: worker_pb2.Assign) -> None:
        key = (assign.job_id, assign.attempt)
        if key in self._jobs:
            log.warning("job %s attempt %d was assigned twice: ignored", *key)
            return
        if self._lifecycle.draining:
            # Sent before the server saw the draining heartbeat: it is this worker's now, so run it.
            log.info("job %s was assigned while draining: running it", assign.job_id)
        if len(self._jobs) >= self._config.slots + self._prefetch.limit:
            log.warning("the server assigned more jobs than this worker has slots and prefetch")
        self._granted = max(0, self._granted - 1)
        progress = functools.partial(self._progress, assign.job_id, assign.attempt)
        job = _Job(assign.job_id, assign.attempt, JobContext(assign.job_id, assign.attempt, progress))
        running = len(self._jobs) - len(self._waiting)
        self._jobs[key] = job
        if running < self._config.slots:
            self._start(job, assign)
        else:
            self._waiting.append((job, assign))  # prefetched: it starts when a slot frees

    def _start(self, job: _Job, assign: worker_pb2.Assign) -> None:
        job.task = asyncio.create_task(self._run_job(job, assign), name=f"jobwire-job-{assign.job_id}")

    async def _run_job(self, job: _Job, assign: worker_pb2.Assign) -> None:
        unbind = bind(job.context)
        started = time.monotonic()
        try:
            outcome: Outcome | None = await self._runner.run(
                assign, job.context, functools.partial(self._emit, job), self._chunk_limit
            )
        except asyncio.CancelledError:
            outcome = None  # an async handler cancelled by CancelJob, or the session ending
        finally:
            unbind()
        if outcome is not None:
            self._prefetch.observe(time.monotonic() - started)
        self._finish(job, outcome)

    def _finish(self, job: _Job, outcome: Outcome | None) -> None:
        self._jobs.pop(job.key, None)
        # A cancelled attempt is not reported (the server already ended it), but its slot is free now.
        if outcome is not None and not job.context.cancelled:
            self._send(self._result(job, outcome))
        if self._waiting and not self._closed:
            self._start(*self._waiting.popleft())
        self._top_up()
        if outcome is not None and outcome.refresh:
            self._lifecycle.recycle(f"job {job.job_id} returned refresh_worker")
        self._check_idle()

    def _top_up(self) -> None:
        """Asks the server for as many jobs as the free slots and the prefetch leave room for."""
        prefetch = 0 if self._lifecycle.draining else self._prefetch.wanted
        wanted = self._config.slots + prefetch - len(self._jobs) - self._granted
        if wanted > 0:
            self._granted += wanted
            self._send(worker_pb2.ConnectRequest(credit=worker_pb2.Credit(slots=wanted)))

    def _result(self, job: _Job, outcome: Outcome) -> worker_pb2.ConnectRequest:
        # Written into the message in place: a Result built apart and passed to the message's constructor
        # would be copied into it, the output with it.
        message = worker_pb2.ConnectRequest()
        result = message.result
        result.job_id = job.job_id
        result.attempt = job.attempt
        output, error = outcome.output, outcome.error
        room = self._message_limit - _ENVELOPE
        if output is not None and len(output) > room:
            error = f"the output encodes to {len(output)} bytes, over the server's message limit of {room}"
            output = None
        if output is not None:
            result.output = output
        if error is not None:
            # Truncated rather than sent whole: a message over the limit would break the stream.
            result.error = error.encode()[: room // 2].decode(errors="ignore")
        return message

    def _emit(self, job: _Job, payload: bytes) -> None:
        if job.context.cancelled:
            return
        job.seq += 1
        chunk = worker_pb2.OutputChunk(job_id=job.job_id, attempt=job.attempt, seq=job.seq, output=payload)
        self._send(worker_pb2.ConnectRequest(chunk=chunk))

    def _progress(self, job_id: str, attempt: int, payload: bytes) -> None:
        """Sends a progress update; called by the job's context, from any thread."""
        if len(payload) > self._message_limit - _ENVELOPE:
            log.warning("a progress update of job %s is too large to send (%d bytes)", job_id, len(payload))
            return
        update = worker_pb2.Progress(job_id=job_id, attempt=attempt, output=payload)
        self._post(worker_pb2.ConnectRequest(progress=update))

    def _cancel(self, cancel: worker_pb2.CancelJob) -> None:
        job = self._jobs.get((cancel.job_id, cancel.attempt))
        if job is None:
            log.debug("cancel for job %s attempt %d, which is not running", cancel.job_id, cancel.attempt)
            return
        self._stop(job, cancel.reason or "CANCELLED")

    def _stop(self, job: _Job, reason: str) -> None:
        if not job.context._cancel(reason):
            return
        log.info("job %s attempt %d cancelled (%s)", job.job_id, job.attempt, reason)
        if job.task is None:  # prefetched, not started: it just goes
            self._waiting = deque(entry for entry in self._waiting if entry[0] is not job)
            self._jobs.pop(job.key, None)
            self._top_up()
            self._check_idle()
            return
        if self._runner.kind.is_async and job.task is not None:
            job.task.cancel()
        # Sync handlers only learn it through their context; the watchdog sees whether they listen.
        job.watchdog = asyncio.create_task(self._watch(job), name=f"jobwire-watchdog-{job.job_id}")

    async def _watch(self, job: _Job) -> None:
        assert job.task is not None
        await asyncio.wait({job.task}, timeout=self._config.stuck_after)
        if job.task.done():
            return
        job.stuck = True
        waited = self._config.stuck_after
        self._lifecycle.recycle(f"job {job.job_id} ({job.attempt}) ignored its cancellation for {waited:g} s")
        self._check_idle()

    def _spawn(self, coroutine: Coroutine[object, object, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.append(task)
        return task


async def _cancel_all(tasks: Iterable[asyncio.Task[None]]) -> None:
    pending = [task for task in tasks if not task.done()]
    for task in pending:
        task.cancel()
    # Also collects the exceptions of tasks that already failed, so that none goes unretrieved.
    await asyncio.gather(*tasks, return_exceptions=True)
