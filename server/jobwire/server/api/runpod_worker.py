"""Runpod's worker HTTP protocol, so that an unmodified `runpod.serverless.start(...)` worker serves
jobwire jobs: job-take (long poll, 204 when empty), job-take-batch, job-done, job-stream, job-stop, ping.

These routes are written by hand rather than transcoded from the proto: their contract is Runpod's
worker's, not a projection of an RPC (204 for "no job", a bare JSON array for a batch, JSON bodies sent
under a form content type, destructive long polls). They call the same dispatcher as stream workers.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from jobwire.server.api.errors import status_of
from jobwire.server.errors import InvalidArgument, JobwireError, PayloadTooLarge
from jobwire.server.model import Endpoint, Role
from jobwire.server.service.auth import Authenticator
from jobwire.server.service.http_workers import HttpWorkers
from jobwire.server.store import ClaimedJob

#: The largest result a worker may post (Runpod's production answers 400 beyond its limit).
MAX_RESULT_BYTES = 20 * 1024 * 1024
JSON = "application/json"


def _json_response(body: bytes, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type=JSON)


def _job_document(claimed: ClaimedJob) -> bytes:
    """Runpod's job object, with the stored input spliced in as it is."""
    parts = [b'{"id":', json.dumps(claimed.job.id).encode(), b',"input":', claimed.input]
    if claimed.webhook:
        parts += [b',"webhook":', json.dumps(claimed.webhook).encode()]
    if claimed.s3_config:
        parts += [b',"s3Config":', claimed.s3_config]
    parts.append(b"}")
    return b"".join(parts)


class RunpodWorkerRoutes:
    def __init__(self, workers: HttpWorkers, auth: Authenticator) -> None:
        self._workers = workers
        self._auth = auth

    def routes(self) -> list[BaseRoute]:
        base = "/v2/{endpoint}"
        return [
            Route(f"{base}/job-take/{{worker}}", self._guard(self.take), methods=["GET"]),
            Route(f"{base}/job-take-batch/{{worker}}", self._guard(self.take_batch), methods=["GET"]),
            Route(f"{base}/job-stop/{{worker}}", self._guard(self.stop), methods=["GET"]),
            Route(f"{base}/job-done/{{worker}}/{{job}}", self._guard(self.done), methods=["POST"]),
            Route(f"{base}/job-stream/{{worker}}/{{job}}", self._guard(self.stream), methods=["POST"]),
            Route(f"{base}/ping/{{worker}}", self._guard(self.ping), methods=["GET"]),
        ]

    def _guard(
        self, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def call(request: Request) -> Response:
            try:
                return await handler(request)
            except JobwireError as error:
                _, status = status_of(error)
                if isinstance(error, PayloadTooLarge):
                    status = 400  # what Runpod's worker expects for an oversize result
                return _json_response(json.dumps({"error": error.message}).encode(), status)

        return call

    async def _endpoint(self, request: Request) -> Endpoint:
        return await self._auth.authorize(
            request.headers.get("authorization"), request.path_params["endpoint"], Role.WORKER
        )

    async def _take(self, request: Request, count: int, batch: bool) -> Response:
        endpoint = await self._endpoint(request)
        jobs = await self._workers.take(endpoint, request.path_params["worker"], count)
        if not jobs:
            return Response(status_code=204)
        if batch:
            return _json_response(b"[" + b",".join(_job_document(j) for j in jobs) + b"]")
        return _json_response(_job_document(jobs[0]))

    async def take(self, request: Request) -> Response:
        return await self._take(request, 1, batch=False)

    async def take_batch(self, request: Request) -> Response:
        raw = request.query_params.get("batch_size", "1")
        if not raw.isdigit() or not 1 <= int(raw) <= 1000:
            raise InvalidArgument("batch_size must be a whole number from 1 to 1000")
        return await self._take(request, int(raw), batch=True)

    async def stop(self, request: Request) -> Response:
        endpoint = await self._endpoint(request)
        ids = await self._workers.stops(endpoint, request.path_params["worker"])
        if not ids:
            return Response(status_code=204)
        return _json_response(json.dumps({"jobsToStop": ids}).encode())

    async def ping(self, request: Request) -> Response:
        endpoint = await self._endpoint(request)
        running = [job for job in request.query_params.get("job_id", "").split(",") if job]
        await self._workers.ping(endpoint, request.path_params["worker"], running)
        return _json_response(b"{}")

    async def _body(self, request: Request) -> dict[str, object]:
        """The posted JSON document (sent under a form content type, which is ignored)."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_RESULT_BYTES:
            raise PayloadTooLarge(f"the body is larger than {MAX_RESULT_BYTES} bytes")
        raw = bytearray()
        async for part in request.stream():
            raw += part
            if len(raw) > MAX_RESULT_BYTES:
                raise PayloadTooLarge(f"the body is larger than {MAX_RESULT_BYTES} bytes")
        try:
            body = json.loads(raw or b"{}")
        except ValueError as error:
            raise InvalidArgument(f"malformed JSON body: {error}") from None
        if not isinstance(body, dict):
            raise InvalidArgument("the body must be a JSON object")
        return body

    async def done(self, request: Request) -> Response:
        endpoint = await self._endpoint(request)
        body = await self._body(request)
        params = request.path_params
        await self._workers.done(endpoint, params["worker"], params["job"], body)
        return _json_response(b"{}")

    async def stream(self, request: Request) -> Response:
        endpoint = await self._endpoint(request)
        body = await self._body(request)
        params = request.path_params
        await self._workers.stream(endpoint, params["worker"], params["job"], body)
        return _json_response(b"{}")
