"""A worker that speaks the WorkerService protocol message by message, for tests of the server's side."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from jobwire.v1 import worker_pb2, worker_pb2_grpc


class RawWorker:
    """One Connect stream; the test sends and reads messages itself."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        key: str,
        endpoint: str,
        worker_id: str,
        slots: int = 1,
        prefetch: int = 0,
    ) -> None:
        self._outgoing: asyncio.Queue[worker_pb2.ConnectRequest | None] = asyncio.Queue()
        self.hello = worker_pb2.Hello(
            endpoint_id=endpoint, worker_id=worker_id, slots=slots, sdk_version="raw", prefetch=prefetch
        )
        stub = worker_pb2_grpc.WorkerServiceStub(channel)
        self.call = stub.Connect(self._requests(), metadata=(("authorization", f"Bearer {key}"),))
        self.welcome: worker_pb2.Welcome | None = None

    async def _requests(self) -> AsyncIterator[worker_pb2.ConnectRequest]:
        yield worker_pb2.ConnectRequest(hello=self.hello)
        while (message := await self._outgoing.get()) is not None:
            yield message

    async def start(self) -> worker_pb2.Welcome:
        first = await self.read()
        assert first.HasField("welcome"), first
        self.welcome = first.welcome
        return first.welcome

    async def read(self) -> worker_pb2.ConnectResponse:
        message = await self.call.read()
        assert isinstance(message, worker_pb2.ConnectResponse), f"stream ended: {message}"
        return message

    async def assignment(self) -> worker_pb2.Assign:
        message = await self.read()
        assert message.HasField("assign"), message
        return message.assign

    def send(self, **fields: object) -> None:
        self._outgoing.put_nowait(worker_pb2.ConnectRequest(**fields))  # type: ignore[arg-type]

    def result(self, assign: worker_pb2.Assign, output: bytes = b"", error: str | None = None) -> None:
        result = worker_pb2.Result(job_id=assign.job_id, attempt=assign.attempt, output=output)
        if error is not None:
            result.error = error
        self.send(result=result)
        self.send(credit=worker_pb2.Credit(slots=1))

    def close(self) -> None:
        self._outgoing.put_nowait(None)

    def abort(self) -> None:
        self.call.cancel()
