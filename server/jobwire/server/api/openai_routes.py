"""Runpod's OpenAI-compatible route: `/v2/{endpoint}/openai/v1/...` as OpenAI's SDKs call it.

Each call becomes a job whose input is `{"openai_route": "/v1/chat/completions", "openai_input": BODY}`
(a body-less GET, such as `/models`, has no `openai_input`), the shape Runpod's vLLM worker reads. The
answer is relayed the way that worker produces it:

- not streamed: the job's output is the response body; a one-item list (a generator worker's aggregated
  output, as vLLM's yields exactly one item) is unwrapped;
- streamed (`"stream": true` in the body): every chunk of the job's stream is written as it arrives, as
  server-sent events. A chunk that is a JSON string is an SSE fragment already (`data: {...}\\n\\n`, the
  vLLM worker's raw output) and is written as it is; any other JSON value is written as one `data:`
  event. The stream ends with `data: [DONE]` when the worker did not send it.

Errors use OpenAI's shape, `{"error": {"message", "type", "code"}}`, which its clients parse. A client
that goes away before the answer cancels the job: nobody would read its result.

These routes are written by hand rather than transcoded: their contract is OpenAI's (SSE, its error
shape, arbitrary sub-paths), not a projection of an RPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from jobwire.server.api.errors import status_of
from jobwire.server.api.jobs import max_body_bytes
from jobwire.server.errors import InvalidArgument, JobwireError, PayloadTooLarge, RateLimited
from jobwire.server.model import Chunk, Endpoint, Job, JobStatus, Role
from jobwire.server.service.auth import Authenticator
from jobwire.server.service.jobs import JobService, Submission
from jobwire.server.service.limits import RateLimiter

DONE = b"data: [DONE]\n\n"
#: HTTP status of a job that ended without a result, and OpenAI's error type for it.
_ENDED_WITHOUT_RESULT = {
    JobStatus.FAILED: (500, "server_error"),
    JobStatus.CANCELLED: (500, "cancelled"),
    JobStatus.TIMED_OUT: (504, "timeout"),
}
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error"}


def _error(
    status: int, message: str, kind: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    body = {
        "error": {"message": message, "type": kind or _ERROR_TYPES.get(status, "server_error"), "code": None}
    }
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def _domain_error(error: JobwireError) -> Response:
    _, status = status_of(error)
    headers = {"Retry-After": str(error.retry_after_s)} if isinstance(error, RateLimited) else None
    return _error(status, error.message, headers=headers)


def _unwrap(output: bytes) -> bytes:
    """A generator worker's aggregated output of one item is that item."""
    if output[:1] == b"[":
        items = orjson.loads(output)
        if isinstance(items, list) and len(items) == 1:
            return orjson.dumps(items[0])
    return output


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def sse_events(chunk: bytes) -> list[bytes]:
    """The server-sent events of one stream chunk (a list chunk holds several items)."""
    value = orjson.loads(chunk)
    items = value if isinstance(value, list) else [value]
    events = []
    for item in items:
        if isinstance(item, str):
            events.append(item.encode())
        else:
            events.append(b"data: " + orjson.dumps(item) + b"\n\n")
    return events


class OpenAIRoutes:
    def __init__(self, jobs: JobService, auth: Authenticator, limiter: RateLimiter | None = None) -> None:
        self._jobs = jobs
        self._auth = auth
        self._limiter = limiter
        self._max_body = max_body_bytes("RunSync")
        self._cancelling: set[asyncio.Task[None]] = set()

    def routes(self) -> list[BaseRoute]:
        return [Route("/v2/{endpoint}/openai/v1/{route:path}", self.call, methods=["GET", "POST"])]

    async def call(self, request: Request) -> Response:
        try:
            endpoint = await self._auth.authorize(
                request.headers.get("authorization"), request.path_params["endpoint"], Role.CLIENT
            )
            if self._limiter is not None:
                await self._limiter.check(endpoint, "openai")
                await self._limiter.admit_job(endpoint)
            document: dict[str, Any] = {"openai_route": "/v1/" + request.path_params["route"]}
            body = await self._body(request)
            if body is not None:
                document["openai_input"] = body
            wait_ms = self._jobs.settings.wait_range_ms[1]
            job = await self._jobs.submit(
                endpoint,
                Submission(input=orjson.dumps(document)),
                max_bytes=self._max_body,
                sync_wait_ms=wait_ms,
            )
            if body is not None and body.get("stream") is True:
                return StreamingResponse(
                    self._relay(endpoint, job.id),
                    media_type="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                )
            return await self._answer(request, endpoint, job.id, wait_ms)
        except JobwireError as error:
            return _domain_error(error)

    async def _body(self, request: Request) -> dict[str, Any] | None:
        """The JSON object of a POST (None for a body-less call), within the runsync size limit."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._max_body:
            raise PayloadTooLarge(f"the request is larger than {self._max_body} bytes")
        raw = bytearray()
        async for part in request.stream():
            raw += part
            if len(raw) > self._max_body:
                raise PayloadTooLarge(f"the request is larger than {self._max_body} bytes")
        if not raw.strip():
            if request.method == "POST":
                raise InvalidArgument("the request body must be a JSON object")
            return None
        try:
            body = json.loads(raw)
        except ValueError as error:
            raise InvalidArgument(f"the request body is not valid JSON: {error}") from None
        if not isinstance(body, dict):
            raise InvalidArgument("the request body must be a JSON object")
        return body

    async def _answer(self, request: Request, endpoint: Endpoint, job_id: str, wait_ms: int) -> Response:
        waiting = asyncio.ensure_future(self._jobs.wait_for_end(endpoint, job_id, wait_ms))
        # The body has been read, so the next ASGI message is the client's disconnect, if it leaves.
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait((waiting, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            ended = waiting.done()
            if not ended:
                waiting.cancel()
        job = waiting.result() if ended else None
        if job is None or not job.status.is_terminal:
            # The client left, or the wait ran out: nobody will read the result.
            await asyncio.shield(self._cancel(endpoint, job_id))
        if job is None:
            return Response(status_code=499)  # nginx's "client closed request"; nobody receives it
        if job.status is JobStatus.COMPLETED:
            return Response(_unwrap(job.output or b"null"), media_type="application/json")
        if job.status.is_terminal:
            status, kind = _ENDED_WITHOUT_RESULT[job.status]
            return _error(status, self._reason(job), kind)
        return _error(504, f"no answer within {wait_ms // 1000} s; job {job_id} was cancelled", "timeout")

    async def _relay(self, endpoint: Endpoint, job_id: str) -> AsyncIterator[bytes]:
        done_sent = ended = False
        try:
            async for event in self._jobs.follow(endpoint, job_id, 0):
                if isinstance(event, Chunk):
                    for sse in sse_events(event.output):
                        done_sent = done_sent or sse.strip() == DONE.strip()
                        yield sse
                    continue
                ended = True
                if event.status is not JobStatus.COMPLETED:
                    _, kind = _ENDED_WITHOUT_RESULT[event.status]
                    error = {"error": {"message": self._reason(event), "type": kind, "code": None}}
                    yield b"data: " + orjson.dumps(error) + b"\n\n"
            if not done_sent:
                yield DONE
        finally:
            if not ended:
                # The response's task is being cancelled (the client left): cancel from a task of its own.
                task = asyncio.create_task(self._cancel(endpoint, job_id))
                self._cancelling.add(task)
                task.add_done_callback(self._cancelling.discard)

    async def _cancel(self, endpoint: Endpoint, job_id: str) -> None:
        with contextlib.suppress(JobwireError):
            await self._jobs.cancel(endpoint, job_id)

    @staticmethod
    def _reason(job: Job) -> str:
        return f"job {job.id} {job.status}" + (f": {job.error}" if job.error else "")
