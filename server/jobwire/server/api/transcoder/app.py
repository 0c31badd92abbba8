"""The ASGI app: HTTP/JSON requests routed by `google.api.http` rules to the in-process RPC behaviours.

Raw ASGI rather than Starlette routing: the route table already decides everything, and this is the
hot path of every REST client. Each request: match the route, read the body under its size limit,
build the request message (body, then path variables, then query), call the behaviour with a
`CallShim`, and answer 200 with protojson, or the error's mapped status with `{"error": details}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import quote

import grpc
import orjson
from google.protobuf.message import Message
from starlette.types import Receive, Scope, Send

from jobwire.server.api.registry import Rpc
from jobwire.server.api.transcoder import codec, params
from jobwire.server.api.transcoder.errors import HttpError, bad_request
from jobwire.server.api.transcoder.rules import Route, RouteTable
from jobwire.server.api.transcoder.shim import CallShim, RpcAbort, metadata_from_headers

logger = logging.getLogger("jobwire.http")

DEFAULT_MAX_BODY = 32 * 1024 * 1024

_JSON = (b"content-type", b"application/json")
#: Server streams are newline-delimited JSON, one `{"result": ...}` document per line.
_NDJSON = (b"content-type", b"application/x-ndjson")
_BEARER = (b"www-authenticate", b"Bearer")


class _ClientGone(Exception):
    """The client disconnected before the request was complete: there is nobody to answer."""


class Transcoder:
    """An ASGI app that serves RPCs at the HTTP bindings of their `google.api.http` rules.

    `Transcoder(rpcs_of(service, servicer))` serves every RPC of the table that has an http rule,
    grpc-gateway style, by calling its behaviour in-process. Mount it as the whole app of a uvicorn
    server or under a Starlette `Mount`. `routes` is the compiled route table (for docs generators).
    Startup fails with `TemplateError` on a bad or overlapping rule.
    """

    def __init__(self, rpcs: Sequence[Rpc], *, default_max_body: int = DEFAULT_MAX_BODY) -> None:
        self.routes = RouteTable.of(rpcs, default_max_body)
        for rpc in rpcs:
            codec.prepare(rpc.method.input_type)
            codec.prepare(rpc.method.output_type)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._serve(scope, receive, send)
        elif kind == "lifespan":
            await _lifespan(receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1003})

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            found = self.routes.match(scope["method"], _raw_path(scope))
            metadata, timeout = metadata_from_headers(scope["headers"])
            request = await _request(found.route, found.values, scope, receive)
        except HttpError as exc:
            await _send_error(send, exc.status, exc.message, exc.headers)
            return
        except _ClientGone:
            return
        except Exception:  # a bug of ours, not a bad request
            logger.exception("building the request of %s %s failed", scope["method"], scope["path"])
            await _send_error(send, 500, "internal error")
            return
        call = _Call(found.route, request, CallShim(metadata, timeout), timeout, receive, send)
        if found.route.rpc.stream is not None:
            await call.stream()
        else:
            await call.unary()


def _raw_path(scope: Scope) -> str:
    # The raw path keeps `%2F` inside a variable distinct from a segment separator.
    raw: bytes | None = scope.get("raw_path")
    path = quote(scope["path"]) if raw is None else raw.decode("latin-1").partition("?")[0]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


async def _request(route: Route, values: list[str], scope: Scope, receive: Receive) -> Message:
    """The request message: body first, then path variables (which win), then query parameters."""
    request = route.rpc.request_class()
    if route.body:
        _apply_body(request, route, await _read_body(scope, receive, route.max_body_bytes))
    for path, value, variable in zip(route.path_fields, values, route.template.variables, strict=True):
        params.assign(request, path, (value,), ".".join(variable.field_path), "path variable")
    if route.body != "*":
        query = params.parse_query(scope.get("query_string", b""))
        if query:
            params.apply_query(request, query, route.query_skip)
    return request


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it is known to exceed `limit` bytes."""
    too_large = HttpError(413, f"request body is larger than {limit} bytes")
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise too_large
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk: bytes = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:  # a chunked body has no Content-Length to check up front
                raise too_large
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _apply_body(request: Message, route: Route, body: bytes) -> None:
    field = route.body_field
    if not body or body.isspace():
        # The Runpod Python SDK posts empty bodies with a JSON content type: they mean `{}`.
        if field is not None and field.message_type is None:
            return
        value: Any = {}
        dumps: codec.Dumps = orjson.dumps
    else:
        try:
            value, dumps = codec.decode_body(body, route.verbatim)
        except ValueError as exc:
            raise bad_request(f"malformed JSON body: {exc}") from None
    if field is None:  # body "*"
        codec.parse_message(request, value, dumps)
        return
    target = field.message_type
    if (
        target is not None
        and not field.is_repeated
        and not codec.is_well_known(target)
        and not isinstance(value, dict)
    ):
        raise bad_request(codec.NOT_OBJECT)
    codec.parse_message(request, {field.name: value}, dumps)


@contextlib.asynccontextmanager
async def _deadline(seconds: float | None) -> AsyncIterator[None]:
    """The `grpc-timeout` deadline: DEADLINE_EXCEEDED when it passes, as a gRPC server would."""
    if seconds is None:
        yield
        return
    scope = asyncio.timeout(seconds)
    try:
        async with scope:
            yield
    except TimeoutError:
        if scope.expired():
            raise RpcAbort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded") from None
        raise


class _Watch:
    """Cancels the serving task when the client disconnects, so that a handler waiting on a job (or
    a stream waiting for chunks) stops at once instead of when its wait ends."""

    __slots__ = ("_finished", "_target", "_task", "gone")

    def __init__(self, receive: Receive) -> None:
        self.gone = False
        self._finished = False
        self._target = asyncio.current_task()
        self._task = asyncio.create_task(self._watch(receive))

    async def _watch(self, receive: Receive) -> None:
        with contextlib.suppress(Exception):
            while (await receive())["type"] != "http.disconnect":
                pass  # the rest of a body no rule reads
            if not self._finished and self._target is not None:
                self.gone = True
                self._target.cancel()

    def finish(self) -> None:
        """From now on the answer is being completed; a disconnect no longer matters."""
        self._finished = True

    def close(self) -> None:
        self._task.cancel()

    def swallow(self) -> bool:
        """Whether a CancelledError is this watch's doing alone (then the caller just returns)."""
        task = self._target
        return self.gone and task is not None and task.uncancel() == 0


class _Call:
    """One in-process call of a route's behaviour and the HTTP answer to it."""

    __slots__ = ("receive", "request", "route", "send", "shim", "timeout")

    def __init__(
        self,
        route: Route,
        request: Message,
        shim: CallShim,
        timeout: float | None,
        receive: Receive,
        send: Send,
    ) -> None:
        self.route, self.request, self.shim, self.timeout = route, request, shim, timeout
        self.receive, self.send = receive, send

    async def unary(self) -> None:
        behaviour = self.route.rpc.unary
        assert behaviour is not None
        watch = _Watch(self.receive)
        try:
            async with _deadline(self.timeout):
                response = await behaviour(self.request, self.shim)
            body = codec.encode(response, self.route.response_field)
            watch.finish()
            await _send_json(self.send, 200, body)
        except RpcAbort as exc:
            watch.finish()
            await _send_error(self.send, exc.http_status, exc.details, exc.http_headers)
        except asyncio.CancelledError:
            if not watch.swallow():
                raise
        except Exception:
            logger.exception("%s failed", self.route.rpc.full_name)
            watch.finish()
            await _send_error(self.send, 500, "internal error")
        finally:
            watch.close()

    async def stream(self) -> None:
        behaviour = self.route.rpc.stream
        assert behaviour is not None
        watch = _Watch(self.receive)
        messages = behaviour(self.request, self.shim)
        started = False
        tail = b""
        try:
            async with _deadline(self.timeout):
                async for message in messages:
                    line = codec.encode_line(message, self.route.response_field)
                    if not started:
                        started = True
                        await self.send({"type": "http.response.start", "status": 200, "headers": [_NDJSON]})
                    await self.send({"type": "http.response.body", "body": line, "more_body": True})
        except RpcAbort as exc:
            if not started:
                watch.finish()
                await _send_error(self.send, exc.http_status, exc.details, exc.http_headers)
                return
            tail = _error_line(exc.code, exc.details)
        except asyncio.CancelledError:
            if watch.swallow():
                return
            raise
        except Exception:
            logger.exception("%s failed", self.route.rpc.full_name)
            if not started:
                watch.finish()
                await _send_error(self.send, 500, "internal error")
                return
            tail = _error_line(grpc.StatusCode.INTERNAL, "internal error")
        finally:
            await messages.aclose()  # runs the handler's cleanup now, not when collected
            watch.close()
        watch.finish()
        if not started:
            await self.send({"type": "http.response.start", "status": 200, "headers": [_NDJSON]})
        await self.send({"type": "http.response.body", "body": tail, "more_body": False})


def _error_line(code: grpc.StatusCode, details: str) -> bytes:
    """The in-band error of a stream that has already answered 200 (grpc-gateway's errorChunk)."""
    number: int = code.value[0]
    return orjson.dumps({"error": {"code": number, "message": details}}, option=orjson.OPT_APPEND_NEWLINE)


async def _send_json(
    send: Send, status: int, body: bytes, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [_JSON, (b"content-length", b"%d" % len(body)), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _send_error(
    send: Send, status: int, message: str, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """`{"error": message}`, the flat shape Runpod's clients read."""
    if status == 401:
        headers = (*headers, _BEARER)
    await _send_json(send, status, orjson.dumps({"error": message}), headers)


async def _lifespan(receive: Receive, send: Send) -> None:
    # Nothing to start or stop: the RPC table's owner manages resources.
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
