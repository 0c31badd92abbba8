"""Per-RPC instrumentation: one `RpcProbe` per method, one `RpcCall` per call.

`api/registry.py` wraps every behaviour with `with probe.observe(request, context) as call:`. That one
place serves gRPC and the REST facade alike, so both are counted (label `transport`), timed, traced
(one SERVER span, `rpc.*` attributes, `jobwire.job_id`) and give their log records a request id.

Cost when tracing is off: a counter, a histogram and a gauge update with pre-bound label children, and
one context-variable binding.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from types import TracebackType
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, MethodDescriptor
from google.protobuf.message import Message
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from jobwire.server.observability import logs
from jobwire.server.observability.metrics import Metrics
from jobwire.server.observability.tracing import Tracing

log = logging.getLogger("jobwire.rpc")

_PROPAGATOR = TraceContextTextMapPropagator()
#: Codes that mean the server failed (OpenTelemetry's rule for gRPC server spans); others are the caller's.
_SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


def _has_string_field(descriptor: Descriptor, name: str) -> bool:
    field = descriptor.fields_by_name.get(name)
    return field is not None and field.type == field.TYPE_STRING


def transport_of(context: object) -> str:
    """`grpc` for grpc.aio's servicer context, `http` for the REST facade's shim. By duck typing: the
    aio context class is not a subclass of `grpc.aio.ServicerContext`, and only it has a peer."""
    return "grpc" if hasattr(context, "peer") else "http"


def _metadata(context: Any) -> dict[str, str]:
    pairs = context.invocation_metadata() or ()
    return {key: value for key, value in pairs if isinstance(value, str)}


class RpcObserver:
    """Makes the probes of a server's RPCs."""

    def __init__(self, metrics: Metrics, tracing: Tracing) -> None:
        self.metrics = metrics
        self.tracing = tracing

    def probe(self, method: MethodDescriptor) -> RpcProbe:
        return RpcProbe(self, method)


class RpcProbe:
    """What is known of one method ahead of its calls: names, label children, where its ids are."""

    def __init__(self, observer: RpcObserver, method: MethodDescriptor) -> None:
        self.service = method.containing_service.full_name
        self.method = method.name
        self.span_name = f"{self.service}/{self.method}"
        self.metrics = observer.metrics
        self.tracing = observer.tracing
        # Unary-request methods carry endpoint and job ids in the request; a bidirectional stream's
        # "request" is an iterator of messages.
        request = None if method.client_streaming else method.input_type
        self.endpoint_field = request is not None and _has_string_field(request, "endpoint_id")
        self.job_field = request is not None and _has_string_field(request, "job_id")
        job = method.output_type.fields_by_name.get("job")
        self.response_job = (
            job is not None and job.message_type is not None and "id" in job.message_type.fields_by_name
        )
        # Label children bound once: `.labels(...)` looks its arguments up on every call otherwise.
        self._timers: dict[str, tuple[Any, Any]] = {}
        self._handled: dict[tuple[str, grpc.StatusCode], Any] = {}

    def observe(self, request: Any, context: Any) -> RpcCall:
        return RpcCall(self, request, context)

    def timers(self, transport: str) -> tuple[Any, Any]:
        """The (duration histogram, in-flight gauge) children of a transport."""
        children = self._timers.get(transport)
        if children is None:
            labels = (self.service, self.method, transport)
            children = (self.metrics.rpc_seconds.labels(*labels), self.metrics.rpc_in_flight.labels(*labels))
            self._timers[transport] = children
        return children

    def handled(self, transport: str, code: grpc.StatusCode) -> Any:
        child = self._handled.get((transport, code))
        if child is None:
            child = self.metrics.rpc_handled.labels(self.service, self.method, transport, code.name)
            self._handled[(transport, code)] = child
        return child


class RpcCall:
    """One call: a context manager around the behaviour.

    The wrapper reports a domain error's status with `failed(code, message)` before aborting; an exit
    without an exception is OK, cancellation (the client left) CANCELLED, anything else UNKNOWN, as
    grpc.aio answers an unhandled exception.
    """

    __slots__ = (
        "_span",
        "_started",
        "_token",
        "code",
        "context",
        "job_id",
        "message",
        "probe",
        "request",
        "transport",
    )

    def __init__(self, probe: RpcProbe, request: Any, context: Any) -> None:
        self.probe = probe
        self.request = request
        self.context = context
        self.transport = transport_of(context)
        self.code: grpc.StatusCode | None = None
        self.message = ""
        self.job_id: str | None = None
        self._span: trace.Span | None = None

    def __enter__(self) -> RpcCall:
        probe = self.probe
        metadata = _metadata(self.context)
        endpoint = self.request.endpoint_id if probe.endpoint_field else None
        self.job_id = self.request.job_id if probe.job_field else None
        # The caller's id when it sent one (`x-request-id`, forwarded by the REST facade), else a new one.
        request_id = metadata.get("x-request-id") or os.urandom(8).hex()
        trace_id = None
        if probe.tracing.enabled:
            parent = _PROPAGATOR.extract(metadata)  # a caller's `traceparent`, if it sent one
            attributes = {
                "rpc.system": "grpc",
                "rpc.service": probe.service,
                "rpc.method": probe.method,
                "jobwire.transport": self.transport,
                "jobwire.request_id": request_id,
            }
            if endpoint:
                attributes["jobwire.endpoint"] = endpoint
            if self.job_id:
                attributes["jobwire.job_id"] = self.job_id
            self._span = probe.tracing.tracer.start_span(
                probe.span_name, context=parent, kind=SpanKind.SERVER, attributes=attributes
            )
            trace_id = format(self._span.get_span_context().trace_id, "032x")
        self._token = logs.bind(
            request_id=request_id, endpoint=endpoint, job_id=self.job_id, trace_id=trace_id
        )
        probe.timers(self.transport)[1].inc()  # in flight
        self._started = time.perf_counter()
        return self

    def succeeded(self, response: Message) -> None:
        """The behaviour answered; a response that carries a job (Run) names it."""
        if self.probe.response_job and self.job_id is None:
            self.job_id = getattr(getattr(response, "job", None), "id", None) or None

    def failed(self, code: grpc.StatusCode, message: str) -> None:
        self.code = code
        self.message = message

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        elapsed = time.perf_counter() - self._started
        code = self._code_of(error)
        probe = self.probe
        duration, in_flight = probe.timers(self.transport)
        in_flight.dec()
        duration.observe(elapsed)
        probe.handled(self.transport, code).inc()
        if self._span is not None:
            self._end_span(code, error)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s %s %s in %.1f ms", probe.span_name, self.transport, code.name, elapsed * 1000,
                extra={"job_id": self.job_id} if self.job_id else None,
            )  # fmt: skip
        logs.unbind(self._token)

    def _code_of(self, error: BaseException | None) -> grpc.StatusCode:
        if self.code is not None:
            return self.code
        if error is None:
            return grpc.StatusCode.OK
        if isinstance(error, asyncio.CancelledError | GeneratorExit):
            return grpc.StatusCode.CANCELLED
        code = getattr(error, "code", None)  # the REST shim's RpcAbort carries its status
        return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN

    def _end_span(self, code: grpc.StatusCode, error: BaseException | None) -> None:
        span = self._span
        assert span is not None
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if self.job_id:
            span.set_attribute("jobwire.job_id", self.job_id)
        if code in _SERVER_FAULTS:
            span.set_status(Status(StatusCode.ERROR, self.message or code.name))
            if error is not None and self.code is None:
                span.record_exception(error)
        span.end()
