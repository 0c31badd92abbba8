"""The JobService servicer: translates messages, authorizes, and calls the service. No logic here."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from jobwire.server.api import convert
from jobwire.server.api.context import CallContext, metadata_value
from jobwire.server.api.errors import status_of
from jobwire.server.clock import Clock
from jobwire.server.errors import JobwireError
from jobwire.server.model import Chunk, Endpoint, Job, JobStatus, Role
from jobwire.server.service.auth import Authenticator
from jobwire.server.service.jobs import JobService
from jobwire.server.service.limits import RateLimiter
from jobwire.v1 import job_pb2, jobs_pb2, options_pb2

SERVICE = jobs_pb2.DESCRIPTOR.services_by_name["JobService"]
#: Submissions of one RunStream being stored at once. Beyond it the stream is not read, so a client
#: that sends faster than the store commits is held back by gRPC's flow control, not by server memory.
STREAM_IN_FLIGHT = 1000


def max_body_bytes(method: str) -> int:
    """The method's payload limit, declared once in the proto (`jobwire.v1.max_body_bytes`)."""
    options = SERVICE.methods_by_name[method].GetOptions()
    return int(options.Extensions[options_pb2.max_body_bytes])


def _idempotency_key(
    request: jobs_pb2.RunRequest | jobs_pb2.RunSyncRequest, context: CallContext
) -> str | None:
    """The request's field, else the `Idempotency-Key` header (forwarded as metadata by the transcoder)."""
    return request.idempotency_key or metadata_value(context, "idempotency-key")


class JobApi:
    def __init__(
        self, service: JobService, auth: Authenticator, clock: Clock, limiter: RateLimiter | None = None
    ) -> None:
        self._service = service
        self._auth = auth
        self._clock = clock
        self._limiter = limiter
        self._run_limit = max_body_bytes("Run")
        self._runsync_limit = max_body_bytes("RunSync")

    async def _endpoint(self, context: CallContext, name: str, operation: str) -> Endpoint:
        """The endpoint, once the key may use it and `operation` is within its rate limit."""
        endpoint = await self._auth.authorize(metadata_value(context, "authorization"), name, Role.CLIENT)
        if self._limiter is not None:
            await self._limiter.check(endpoint, operation)
        return endpoint

    async def _admit(self, endpoint: Endpoint) -> None:
        if self._limiter is not None:
            await self._limiter.admit_job(endpoint)

    def _wait_ms(self, context: CallContext, requested: int | None) -> int:
        """The wait, shortened to the caller's deadline so the answer arrives before the caller gives up."""
        wait_ms = self._service.wait_ms(requested)
        remaining = context.time_remaining()
        if remaining is not None:
            wait_ms = max(0, min(wait_ms, int(remaining * 1000) - 200))
        return wait_ms

    async def run(self, request: jobs_pb2.RunRequest, context: CallContext) -> jobs_pb2.RunResponse:
        job = await self._submit(request, _idempotency_key(request, context), context)
        return convert.with_job(jobs_pb2.RunResponse(), job, self._clock.now())

    async def _submit(self, request: jobs_pb2.RunRequest, key: str | None, context: CallContext) -> Job:
        endpoint = await self._endpoint(context, request.endpoint_id, "run")
        await self._admit(endpoint)
        return await self._service.submit(
            endpoint, convert.submission(request.job, key), max_bytes=self._run_limit
        )

    async def run_stream(
        self, requests: AsyncIterator[jobs_pb2.RunStreamRequest], context: CallContext
    ) -> AsyncIterator[jobs_pb2.RunStreamResponse]:
        """Run for many submissions on one stream. Each is submitted as it is read, so the submissions of
        a message (and of the next ones) join the same group commit; the answers leave in request order,
        everything answered by then in one message."""
        room = asyncio.Semaphore(STREAM_IN_FLIGHT)
        answers: asyncio.Queue[list[asyncio.Task[Job | JobwireError]] | None] = asyncio.Queue()

        async def read() -> None:
            try:
                async for message in requests:
                    batch = []
                    for request in message.requests:
                        await room.acquire()
                        batch.append(asyncio.create_task(self._outcome(request, context, room)))
                    answers.put_nowait(batch)
            finally:
                answers.put_nowait(None)  # always the last item

        reader = asyncio.create_task(read())
        try:
            ended = False
            while not ended:
                batches = [await answers.get()]
                while not answers.empty():  # what else was read meanwhile goes in the same answer
                    batches.append(answers.get_nowait())
                ended = batches[-1] is None
                tasks = [task for batch in batches if batch is not None for task in batch]
                if tasks:
                    yield await self._answer(tasks)
            await reader  # the client's side failed: its error ends the call
        finally:
            reader.cancel()

    async def _outcome(
        self, request: jobs_pb2.RunRequest, context: CallContext, room: asyncio.Semaphore
    ) -> Job | JobwireError:
        """One submission of a RunStream: the job, or the error Run would have ended with."""
        try:
            return await self._submit(request, request.idempotency_key or None, context)
        except JobwireError as exc:
            return exc
        finally:
            room.release()

    async def _answer(self, tasks: list[asyncio.Task[Job | JobwireError]]) -> jobs_pb2.RunStreamResponse:
        # Each outcome is written into the response in place (a message built apart would be copied in).
        response = jobs_pb2.RunStreamResponse()
        for task in tasks:
            result, outcome = await task, response.outcomes.add()
            if isinstance(result, JobwireError):
                outcome.error.code = status_of(result)[0].value[0]
                outcome.error.message = result.message
            else:
                convert.job(result, self._clock.now(), outcome.job)
        return response

    async def run_sync(
        self, request: jobs_pb2.RunSyncRequest, context: CallContext
    ) -> jobs_pb2.RunSyncResponse:
        endpoint = await self._endpoint(context, request.endpoint_id, "runsync")
        await self._admit(endpoint)
        wait_ms = self._wait_ms(context, request.wait if request.HasField("wait") else None)
        key = _idempotency_key(request, context)
        job = await self._service.run_sync(
            endpoint, convert.submission(request.job, key), max_bytes=self._runsync_limit, wait_ms=wait_ms
        )
        return convert.with_job(jobs_pb2.RunSyncResponse(), job, self._clock.now())

    async def status(self, request: jobs_pb2.StatusRequest, context: CallContext) -> jobs_pb2.StatusResponse:
        endpoint = await self._endpoint(context, request.endpoint_id, "status")
        ttl = request.ttl if request.HasField("ttl") else None
        job = await self._service.status(endpoint, request.job_id, ttl)
        return convert.with_job(jobs_pb2.StatusResponse(), job, self._clock.now())

    async def status_sync(
        self, request: jobs_pb2.StatusSyncRequest, context: CallContext
    ) -> jobs_pb2.StatusSyncResponse:
        endpoint = await self._endpoint(context, request.endpoint_id, "status")
        wait_ms = self._wait_ms(context, request.wait if request.HasField("wait") else None)
        job = await self._service.wait_for_end(endpoint, request.job_id, wait_ms)
        return convert.with_job(jobs_pb2.StatusSyncResponse(), job, self._clock.now())

    async def stream(
        self, request: jobs_pb2.StreamRequest, context: CallContext
    ) -> AsyncIterator[jobs_pb2.StreamResponse]:
        endpoint = await self._endpoint(context, request.endpoint_id, "status")
        async for event in self._service.follow(endpoint, request.job_id, request.from_seq):
            if isinstance(event, Chunk):
                yield jobs_pb2.StreamResponse(chunk=convert.chunk(event))
            else:
                done = jobs_pb2.StreamResponse()
                convert.job(event, self._clock.now(), done.done)
                yield done

    async def read_stream(
        self, request: jobs_pb2.ReadStreamRequest, context: CallContext
    ) -> jobs_pb2.ReadStreamResponse:
        endpoint = await self._endpoint(context, request.endpoint_id, "status")
        hold = request.wait if request.HasField("wait") else None
        status, chunks = await self._service.read_stream(endpoint, request.job_id, hold)
        return jobs_pb2.ReadStreamResponse(
            id=request.job_id,
            status=convert.status(status),
            stream=[job_pb2.StreamOutput(output=c.output) for c in chunks],
        )

    async def cancel(self, request: jobs_pb2.CancelRequest, context: CallContext) -> jobs_pb2.CancelResponse:
        endpoint = await self._endpoint(context, request.endpoint_id, "cancel")
        job = await self._service.cancel(endpoint, request.job_id)
        return convert.with_job(jobs_pb2.CancelResponse(), job, self._clock.now())

    async def retry(self, request: jobs_pb2.RetryRequest, context: CallContext) -> jobs_pb2.RetryResponse:
        endpoint = await self._endpoint(context, request.endpoint_id, "cancel")
        job = await self._service.retry(endpoint, request.job_id)
        return convert.with_job(jobs_pb2.RetryResponse(), job, self._clock.now())

    async def purge_queue(
        self, request: jobs_pb2.PurgeQueueRequest, context: CallContext
    ) -> jobs_pb2.PurgeQueueResponse:
        endpoint = await self._endpoint(context, request.endpoint_id, "purge-queue")
        removed = await self._service.purge(endpoint)
        return jobs_pb2.PurgeQueueResponse(removed=removed, status="completed")

    async def health(self, request: jobs_pb2.HealthRequest, context: CallContext) -> jobs_pb2.HealthResponse:
        endpoint = await self._endpoint(context, request.endpoint_id, "status")
        counts, workers = await asyncio.gather(
            self._service.counts(endpoint), self._service.worker_counts(endpoint)
        )
        return convert.health(counts, workers)

    async def list_requests(
        self, request: jobs_pb2.ListRequestsRequest, context: CallContext
    ) -> jobs_pb2.ListRequestsResponse:
        endpoint = await self._endpoint(context, request.endpoint_id, "requests")
        statuses = frozenset(JobStatus(job_pb2.JobStatus.Name(s)) for s in request.status if s)
        limit = request.limit if request.HasField("limit") else None
        page, cursor = await self._service.list_requests(endpoint, limit, request.cursor, statuses)
        now = self._clock.now()
        return jobs_pb2.ListRequestsResponse(
            requests=[convert.request_summary(summary, now) for summary in page], next_cursor=cursor or ""
        )

    async def list_endpoints(
        self, request: jobs_pb2.ListEndpointsRequest, context: CallContext
    ) -> jobs_pb2.ListEndpointsResponse:
        endpoints = await self._auth.visible_endpoints(metadata_value(context, "authorization"))

        async def summary(endpoint: Endpoint) -> jobs_pb2.EndpointSummary:
            counts, workers = await asyncio.gather(
                self._service.counts(endpoint), self._service.worker_counts(endpoint)
            )
            return jobs_pb2.EndpointSummary(name=endpoint.name, health=convert.health(counts, workers))

        return jobs_pb2.ListEndpointsResponse(endpoints=await asyncio.gather(*map(summary, endpoints)))
