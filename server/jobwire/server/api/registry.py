"""One table of RPCs, built from the service descriptor, served by gRPC and by the HTTP transcoder.

A servicer is a plain object with one coroutine (or async generator, for server-streaming RPCs) per
RPC, named in snake_case (`Run` -> `run`, `PurgeQueue` -> `purge_queue`). Message classes come from the
descriptor pool, so no generated `*_pb2_grpc` servicer base is involved on the server side.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import grpc
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from jobwire.server.api.context import CallContext
from jobwire.server.api.errors import abort_with, status_of
from jobwire.server.errors import JobwireError
from jobwire.server.observability import RpcObserver, RpcProbe

UnaryBehaviour = Callable[[Any, CallContext], Awaitable[Message]]
#: Server-streaming (request, context) and bidirectional (request iterator, context) behaviours alike.
StreamBehaviour = Callable[[Any, CallContext], AsyncGenerator[Message, None]]


@dataclass(frozen=True)
class Rpc:
    """One RPC: its descriptor, message classes and the behaviour that serves it (errors mapped)."""

    method: MethodDescriptor
    request_class: type[Message]
    response_class: type[Message]
    unary: UnaryBehaviour | None
    stream: StreamBehaviour | None

    @property
    def full_name(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"


def snake_case(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _unary(behaviour: UnaryBehaviour, probe: RpcProbe | None = None) -> UnaryBehaviour:
    async def call(request: Any, context: CallContext) -> Message:
        try:
            return await behaviour(request, context)
        except JobwireError as exc:
            await abort_with(context, exc)

    if probe is None:
        return call

    # Observability (issue 6): the same call, counted, timed, traced and given a request id for logs.
    async def observed(request: Any, context: CallContext) -> Message:
        with probe.observe(request, context) as rpc:
            try:
                response = await behaviour(request, context)
            except JobwireError as exc:
                rpc.failed(status_of(exc)[0], exc.message)
                await abort_with(context, exc)
            rpc.succeeded(response)
            return response

    return observed


def _stream(behaviour: StreamBehaviour, probe: RpcProbe | None = None) -> StreamBehaviour:
    async def call(request: Any, context: CallContext) -> AsyncGenerator[Message, None]:
        try:
            # aclosing: when the caller stops early (client gone), the servicer's cleanup runs at once.
            async with contextlib.aclosing(behaviour(request, context)) as messages:
                async for message in messages:
                    yield message
        except JobwireError as exc:
            await abort_with(context, exc)

    if probe is None:
        return call

    # Observability (issue 6): as for unary calls; the call's time is the stream's whole life.
    async def observed(request: Any, context: CallContext) -> AsyncGenerator[Message, None]:
        with probe.observe(request, context) as rpc:
            try:
                async with contextlib.aclosing(behaviour(request, context)) as messages:
                    async for message in messages:
                        yield message
            except JobwireError as exc:
                rpc.failed(status_of(exc)[0], exc.message)
                await abort_with(context, exc)

    return observed


def rpcs_of(service: ServiceDescriptor, servicer: object, observer: RpcObserver | None = None) -> list[Rpc]:
    """The RPC table of `servicer` for `service`; every RPC of the service must be implemented.

    With an `observer`, every call is recorded (metrics, a span, log context) by the wrappers here,
    the one place both gRPC and the REST facade pass.
    """
    rpcs = []
    for method in service.methods:
        behaviour = getattr(servicer, snake_case(method.name), None)
        if behaviour is None:
            raise TypeError(f"{type(servicer).__name__} does not implement {method.full_name}")
        streaming = method.server_streaming
        probe = observer.probe(method) if observer is not None else None
        rpcs.append(
            Rpc(
                method=method,
                request_class=GetMessageClass(method.input_type),
                response_class=GetMessageClass(method.output_type),
                unary=None if streaming else _unary(behaviour, probe),
                stream=_stream(behaviour, probe) if streaming else None,
            )
        )
    return rpcs


def grpc_handler(service: ServiceDescriptor, rpcs: list[Rpc]) -> grpc.GenericRpcHandler:
    """A generic handler that serves the table on a grpc.aio server."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for rpc in rpcs:
        serialize = rpc.response_class.SerializeToString
        deserialize = rpc.request_class.FromString
        if rpc.stream is not None and rpc.method.client_streaming:
            handlers[rpc.method.name] = grpc.stream_stream_rpc_method_handler(
                cast(Any, rpc.stream), request_deserializer=deserialize, response_serializer=serialize
            )
        elif rpc.stream is not None:
            handlers[rpc.method.name] = grpc.unary_stream_rpc_method_handler(
                cast(Any, rpc.stream), request_deserializer=deserialize, response_serializer=serialize
            )
        else:
            handlers[rpc.method.name] = grpc.unary_unary_rpc_method_handler(
                cast(Any, rpc.unary), request_deserializer=deserialize, response_serializer=serialize
            )
    return grpc.method_handlers_generic_handler(service.full_name, handlers)
