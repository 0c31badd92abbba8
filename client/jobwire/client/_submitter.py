"""Many concurrent submissions over one RunStream call (see the package's docstring)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from types import TracebackType

import grpc

from jobwire.v1 import job_pb2, jobs_pb2, jobs_pb2_grpc

#: A write carries at most this many bytes of submissions (one bigger submission goes alone), so a burst
#: of large inputs does not make one message of hundreds of megabytes.
BATCH_BYTES = 1024 * 1024


class SubmissionRefused(Exception):
    """The server refused one submission; `code` is the gRPC status Run would have ended with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


_CODES = {code.value[0]: code for code in grpc.StatusCode}


class Submitter:
    """Submits jobs over one `RunStream` call, opened at the first submission and again after a failure.

    When the call fails (the server restarted, the connection dropped), every submission waiting for
    its answer raises that `grpc.aio.AioRpcError`: such a job may or may not have been committed, so
    submit it again with the same `idempotency_key` to be sure to get one job. Cancelling a caller does
    not withdraw its submission once it was written."""

    def __init__(self, channel: grpc.aio.Channel, key: str, *, batch_bytes: int = BATCH_BYTES) -> None:
        self._stub = jobs_pb2_grpc.JobServiceStub(channel)
        self._metadata = (("authorization", f"Bearer {key}"),)
        self._batch_bytes = batch_bytes
        self._queued: collections.deque[tuple[asyncio.Future[job_pb2.Job], jobs_pb2.RunRequest]] = (
            collections.deque()
        )
        self._ready = asyncio.Event()
        self._stream: asyncio.Task[None] | None = None
        self._closed = False

    async def __aenter__(self) -> Submitter:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def submit(self, request: jobs_pb2.RunRequest) -> job_pb2.Job:
        """The job as Run would return it; `SubmissionRefused` where Run would fail."""
        if self._closed:
            raise RuntimeError("the Submitter is closed")
        future: asyncio.Future[job_pb2.Job] = asyncio.get_running_loop().create_future()
        self._queued.append((future, request))
        self._ready.set()
        if self._stream is None or self._stream.done():
            self._stream = asyncio.create_task(self._serve(), name="jobwire-run-stream")
        return await future

    async def close(self) -> None:
        """Ends the call; submissions still waiting raise `asyncio.CancelledError`."""
        self._closed = True
        if self._stream is not None:
            self._stream.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stream
        for future, _ in self._queued:
            future.cancel()
        self._queued.clear()

    async def _serve(self) -> None:
        """One call: writes what is queued, hands out the answers; when it ends, fails what was sent."""
        call = self._stub.RunStream(metadata=self._metadata)
        sent: collections.deque[asyncio.Future[job_pb2.Job]] = collections.deque()
        writer = asyncio.create_task(self._write(call, sent))
        error: BaseException | None = RuntimeError("the server ended the RunStream call")
        try:
            async for response in call:
                for outcome in response.outcomes:
                    _answer(sent.popleft(), outcome)
        except grpc.aio.AioRpcError as exc:
            error = exc
        except asyncio.CancelledError:
            error = None  # closed: the waiting callers are cancelled
            raise
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
            call.cancel()
            for future in sent:
                if future.done():
                    continue
                if error is None:
                    future.cancel()
                else:
                    future.set_exception(error)
        if self._queued and not self._closed:  # submitted while the call was failing: a new call
            self._stream = asyncio.create_task(self._serve(), name="jobwire-run-stream")

    async def _write(
        self,
        call: grpc.aio.StreamStreamCall[jobs_pb2.RunStreamRequest, jobs_pb2.RunStreamResponse],
        sent: collections.deque[asyncio.Future[job_pb2.Job]],
    ) -> None:
        try:
            while True:
                if not self._queued:
                    self._ready.clear()
                    await self._ready.wait()
                batch, size = jobs_pb2.RunStreamRequest(), 0
                while self._queued:
                    future, request = self._queued[0]
                    added = request.ByteSize()
                    if batch.requests and size + added > self._batch_bytes:
                        break
                    self._queued.popleft()
                    if future.done():  # the caller was cancelled before its submission left
                        continue
                    batch.requests.append(request)
                    sent.append(future)
                    size += added
                if batch.requests:
                    await call.write(batch)
        except Exception:
            call.cancel()  # the reading side then ends with the call's error
            raise


def _answer(future: asyncio.Future[job_pb2.Job], outcome: jobs_pb2.RunOutcome) -> None:
    if future.done():  # the caller was cancelled
        return
    if outcome.HasField("error"):
        code = _CODES.get(outcome.error.code, grpc.StatusCode.UNKNOWN)
        future.set_exception(SubmissionRefused(code, outcome.error.message))
    else:
        future.set_result(outcome.job)
