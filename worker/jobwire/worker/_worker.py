"""`Worker`: serves an endpoint's jobs with a handler, over one stream, reconnecting when it breaks."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import threading
from typing import Required, TypedDict

import grpc

from jobwire.v1 import worker_pb2_grpc
from jobwire.worker._accelerators import detect_accelerators
from jobwire.worker._backoff import Backoff
from jobwire.worker._channel import authorization, open_channel
from jobwire.worker._errors import WorkerRecycle
from jobwire.worker._lifecycle import Lifecycle
from jobwire.worker._prefetch import Prefetch, PrefetchSetting
from jobwire.worker._runner import Handler, Runner
from jobwire.worker._session import End, Session, SessionConfig
from jobwire.worker._threads import call_soon
from jobwire.worker._version import __version__

log = logging.getLogger("jobwire.worker")


class WorkerOptions(TypedDict, total=False):
    """The keyword arguments of `Worker` (and of `run_worker`)."""

    endpoint: Required[str]
    key: Required[str]
    server: str
    concurrency: int
    prefetch: PrefetchSetting
    worker_id: str | None
    return_aggregate_stream: bool
    stuck_after: float
    credentials: grpc.ChannelCredentials | None
    backoff: Backoff | None
    close_timeout: float


def default_worker_id() -> str:
    """`hostname-pid-random`: stable for the process, unique across processes."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Worker:
    """Takes jobs of one endpoint from a jobwire server and runs them with `handler`.

    The handler is a Runpod handler: a function, async function, generator or async generator taking
    the job dict (`{"id", "input", ...}`). Sync handlers run in threads of their own, so several run at
    once up to `concurrency`; async ones run on the event loop.

    - `endpoint`, `key`: the endpoint to serve and a worker key of it (a bare key is sent as a Bearer
      token).
    - `server`: host:port of the server's gRPC listener; `credentials` switch the channel to TLS.
    - `concurrency`: how many jobs run at once (the slots announced to the server).
    - `prefetch`: how many jobs to hold beyond them, waiting for a free slot, so that a slot that frees
      finds its next job there instead of asking the server and waiting for it. "auto" (the default)
      prefetches only while handlers run for less than a few dispatch round trips (fast jobs), up to three
      jobs per slot, and nothing for slow ones (a GPU job of seconds); 0 never; a number from 0 to
      3 x `concurrency` fixes it. A prefetched job's execution timeout runs while it waits.
    - `worker_id`: stable across reconnects; defaults to `hostname-pid-random`.
    - `return_aggregate_stream`: a generator's final output is the list of everything it yielded
      (otherwise `[]`, as with Runpod).
    - `stuck_after`: seconds a cancelled handler may keep running before the worker recycles (see
      `WorkerRecycle`).
    - `backoff`: the reconnection delays (exponential, full jitter, 0.1 s to 30 s by default).
    - `close_timeout`: how long to wait for the server to end the stream after a drain.

    A Worker runs once: after `run()` returned it stays drained.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        endpoint: str,
        key: str,
        server: str = "127.0.0.1:50051",
        concurrency: int = 1,
        prefetch: PrefetchSetting = "auto",
        worker_id: str | None = None,
        return_aggregate_stream: bool = False,
        stuck_after: float = 30.0,
        credentials: grpc.ChannelCredentials | None = None,
        backoff: Backoff | None = None,
        close_timeout: float = 5.0,
    ) -> None:
        if not endpoint or not key:
            raise ValueError("a Worker needs an endpoint and a worker key")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if stuck_after <= 0:
            raise ValueError("stuck_after must be positive")
        self._prefetch = Prefetch(concurrency, prefetch)
        self.worker_id = worker_id or default_worker_id()
        self._runner = Runner(handler, worker_id=self.worker_id, aggregate_stream=return_aggregate_stream)
        self._endpoint = endpoint
        self._metadata = (("authorization", authorization(key)),)
        self._server = server
        self._concurrency = concurrency
        self._stuck_after = stuck_after
        self._credentials = credentials
        self._backoff = backoff or Backoff()
        self._close_timeout = close_timeout
        self._lifecycle = Lifecycle()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None

    @property
    def draining(self) -> bool:
        """True once the worker drains (asked to, told by the server, or recycling)."""
        return self._lifecycle.draining

    def drain(self) -> None:
        """Finishes the running jobs, takes no new one, then makes `run()` return. Thread-safe."""
        loop = self._loop
        if loop is not None and threading.get_ident() != self._loop_thread:
            call_soon(loop, self._lifecycle.drain)
        else:
            self._lifecycle.drain()

    async def run(self) -> None:
        """Serves jobs until drained, reconnecting whenever the stream breaks.

        Returns after a drain (`drain()`, or the server's Drain). Raises `WorkerRejected` when the
        server refuses the worker (bad key, unknown endpoint: reconnecting would not help), and
        `WorkerRecycle` when the process should be restarted.
        """
        if self._loop is not None:
            raise RuntimeError("this Worker is already running")
        self._loop, self._loop_thread = asyncio.get_running_loop(), threading.get_ident()
        try:
            config = self._session_config()
            while not self._lifecycle.draining:
                end = await self._connect(config)
                if self._lifecycle.recycle_reason is not None:
                    raise WorkerRecycle(self._lifecycle.recycle_reason)
                if end is End.DRAINED or self._lifecycle.draining:
                    break
                await self._pause()
        finally:
            self._loop = self._loop_thread = None
        log.info("worker %s drained", self.worker_id)

    def _session_config(self) -> SessionConfig:
        return SessionConfig(
            endpoint=self._endpoint,
            worker_id=self.worker_id,
            slots=self._concurrency,
            sdk_version=__version__,
            accelerators=tuple(detect_accelerators()),
            metadata=self._metadata,
            stuck_after=self._stuck_after,
            close_timeout=self._close_timeout,
        )

    async def _connect(self, config: SessionConfig) -> End:
        # A channel per connection: the backoff here decides when to retry, not the channel's own.
        channel = open_channel(self._server, self._credentials)
        session = Session(
            config, self._runner, self._lifecycle, on_welcome=self._backoff.reset, prefetch=self._prefetch
        )
        try:
            end = await session.run(worker_pb2_grpc.WorkerServiceStub(channel))
            if end is End.BROKEN:
                await session.abandon()  # the server requeued them: stop them before starting afresh
            return end
        finally:
            await session.close()
            await channel.close()

    async def _pause(self) -> None:
        """Sleeps the backoff delay before reconnecting; a drain cuts it short."""
        delay = self._backoff.next_delay()
        log.info("reconnecting to %s in %.2f s", self._server, delay)
        sleeping = asyncio.ensure_future(self._backoff.sleep(delay))
        draining = asyncio.ensure_future(self._lifecycle.drain_started.wait())
        _, pending = await asyncio.wait({sleeping, draining}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
