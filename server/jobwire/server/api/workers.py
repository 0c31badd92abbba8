"""The WorkerService servicer: one bidirectional stream per worker, translated to dispatcher calls."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from functools import partial

from jobwire.server.api.context import CallContext, metadata_value
from jobwire.server.errors import InvalidArgument, Unavailable
from jobwire.server.model import Role
from jobwire.server.service.auth import Authenticator
from jobwire.server.service.dispatch import (
    AssignJob,
    CloseSession,
    Dispatcher,
    Outbound,
    StopJob,
    WorkerSession,
)
from jobwire.v1 import worker_pb2

WORKER_SERVICE = worker_pb2.DESCRIPTOR.services_by_name["WorkerService"]
# Messages queued for a worker while a write is in flight leave together in one batch of at most this
# many bytes; a bigger one (a large input) goes on its own.
BATCH_BYTES = 256 * 1024


def _assign(event: AssignJob) -> worker_pb2.ConnectResponse:
    # Written into the response in place: an Assign built apart and passed to the response's constructor
    # would be copied into it, the input with it (6 ms more for a 10 MB input, most of it page faults).
    claimed = event.claimed
    response = worker_pb2.ConnectResponse()
    assign = response.assign
    assign.job_id = claimed.job.id
    assign.attempt = claimed.job.attempt
    assign.input = claimed.input
    assign.s3_config = claimed.s3_config or b""
    assign.webhook = claimed.webhook or ""
    assign.execution_timeout_ms = claimed.execution_timeout_ms
    return response


def _accelerators(hello: worker_pb2.Hello) -> str:
    return json.dumps(
        [{"name": a.name, "uuid": a.uuid, "memoryBytes": a.memory_bytes} for a in hello.accelerators]
    )


class WorkerApi:
    def __init__(self, dispatcher: Dispatcher, auth: Authenticator) -> None:
        self._dispatcher = dispatcher
        self._auth = auth

    async def connect(
        self, requests: AsyncIterator[worker_pb2.ConnectRequest], context: CallContext
    ) -> AsyncIterator[worker_pb2.ConnectResponse]:
        first = await anext(aiter(requests), None)
        if first is None or not first.HasField("hello"):
            raise InvalidArgument("the first message on a worker stream must be Hello")
        hello = first.hello
        if not hello.worker_id or hello.slots < 1:
            raise InvalidArgument("Hello needs a worker_id and at least one slot")
        endpoint = await self._auth.authorize(
            metadata_value(context, "authorization"), hello.endpoint_id, Role.WORKER
        )
        outbox: asyncio.Queue[Outbound] = asyncio.Queue()
        session = WorkerSession(
            worker_id=hello.worker_id,
            endpoint=endpoint.name,
            slots=hello.slots,
            kind="grpc",
            send=outbox.put_nowait,
            sdk_version=hello.sdk_version,
            accelerators=_accelerators(hello),
            prefetch=hello.prefetch,
        )
        settings = self._dispatcher.settings
        yield worker_pb2.ConnectResponse(
            welcome=worker_pb2.Welcome(
                session_id=session.session_id,
                heartbeat_interval_ms=settings.heartbeat_interval_ms,
                lease_ms=settings.lease_ms,
                max_message_bytes=settings.max_message_bytes,
                max_chunk_bytes=settings.max_chunk_bytes,
                accepts_batches=True,
            )
        )
        await self._dispatcher.attach(session)
        storing: set[asyncio.Task[bool]] = set()
        reader = asyncio.create_task(self._read(requests, session, storing), name=f"worker-{hello.worker_id}")
        try:
            async for message in self._outgoing(outbox, reader, hello.accepts_batches):
                yield message
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            # Shielded: the stream may end by cancellation, and the jobs must still be released.
            await asyncio.shield(self._end(session, storing))

    async def _end(self, session: WorkerSession, storing: set[asyncio.Task[bool]]) -> None:
        # Results the worker sent are stored (or have failed) before its other attempts are given back,
        # so a finished job is not requeued because its result was still on the way.
        if storing:
            await asyncio.wait(set(storing))
        await self._dispatcher.detach(session)

    async def _outgoing(
        self, outbox: asyncio.Queue[Outbound], reader: asyncio.Task[None], batches: bool
    ) -> AsyncIterator[worker_pb2.ConnectResponse]:
        carried: list[Outbound] = []  # taken from the outbox, but did not fit in the last batch
        while True:
            if carried:
                event = carried.pop()
            else:
                getting = asyncio.ensure_future(outbox.get())
                await asyncio.wait({getting, reader}, return_when=asyncio.FIRST_COMPLETED)
                if not getting.done():
                    getting.cancel()
                    reader.result()  # the worker's side ended: raise its error, if any
                    return
                event = getting.result()
            if isinstance(event, CloseSession):
                raise Unavailable(f"session closed by the server: {event.reason}")
            first = _response(event)
            # What else queued up while the last write was in flight goes in the same write, for a
            # worker that reads batches (no timer: a lone message leaves at once).
            messages, size = [first], first.ByteSize()
            while batches and size < BATCH_BYTES and not outbox.empty():
                event = outbox.get_nowait()
                message = None if isinstance(event, CloseSession) else _response(event)
                added = 0 if message is None else message.ByteSize()
                if message is None or size + added > BATCH_BYTES:
                    carried.append(event)
                    break
                size += added
                messages.append(message)
            if len(messages) == 1:
                yield first
            else:
                yield worker_pb2.ConnectResponse(batch=worker_pb2.ConnectResponseBatch(messages=messages))

    async def _read(
        self,
        requests: AsyncIterator[worker_pb2.ConnectRequest],
        session: WorkerSession,
        storing: set[asyncio.Task[bool]],
    ) -> None:
        async for message in requests:
            self._dispatcher.heard_from(session)
            if message.WhichOneof("message") == "batch":
                for inner in message.batch.messages:
                    if inner.WhichOneof("message") == "batch":
                        raise InvalidArgument("a batch of worker messages cannot hold another batch")
                    await self._handle(inner, session, storing)
            else:
                await self._handle(message, session, storing)

    async def _handle(
        self, message: worker_pb2.ConnectRequest, session: WorkerSession, storing: set[asyncio.Task[bool]]
    ) -> None:
        dispatcher = self._dispatcher
        kind = message.WhichOneof("message")
        if kind == "heartbeat":
            if message.heartbeat.draining:
                dispatcher.set_draining(session)
        elif kind == "credit":
            dispatcher.add_credit(session, message.credit.slots)
        elif kind == "progress":
            p = message.progress
            await dispatcher.report_progress(p.job_id, p.attempt, p.output)
        elif kind == "chunk":
            c = message.chunk
            await dispatcher.report_chunk(c.job_id, c.attempt, c.seq, c.output)
        elif kind == "result":
            # Not awaited: the next results of this stream (and of other streams) are read meanwhile
            # and join the same group commit. A worker holds at most `capacity` attempts, so this holds
            # at most that many stores, and waits when a misbehaving worker sends more.
            if len(storing) >= session.capacity:
                await asyncio.wait(set(storing), return_when=asyncio.FIRST_COMPLETED)
            r = message.result
            error = r.error if r.HasField("error") else None
            task = asyncio.create_task(
                dispatcher.report_result(session, r.job_id, r.attempt, r.output or None, error)
            )
            storing.add(task)
            task.add_done_callback(partial(_stored, session, storing))


def _response(event: AssignJob | StopJob) -> worker_pb2.ConnectResponse:
    if isinstance(event, AssignJob):
        return _assign(event)
    stop = worker_pb2.CancelJob(job_id=event.job_id, attempt=event.attempt, reason=str(event.reason))
    return worker_pb2.ConnectResponse(cancel=stop)


def _stored(session: WorkerSession, storing: set[asyncio.Task[bool]], task: asyncio.Task[bool]) -> None:
    storing.discard(task)
    if not task.cancelled() and task.exception() is not None:
        # The store stayed unavailable through the dispatcher's retries: end the session (as a failing
        # read would), so the worker reconnects and its attempts are released.
        session.send(CloseSession(f"could not store a result: {task.exception()}"))
