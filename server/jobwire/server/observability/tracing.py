"""OpenTelemetry traces, on when an exporter is configured and free when none is.

Switched on by the environment, read once when the server is built:

- `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`): OTLP over gRPC to that
  collector; the exporter reads the other standard `OTEL_EXPORTER_OTLP_*` variables (headers, TLS).
- `JOBWIRE_OTEL=console`: spans printed as JSON to stderr (for a look without a collector);
  `JOBWIRE_OTEL=otlp`: OTLP to the exporter's default (localhost:4317); `JOBWIRE_OTEL=none`: off.
- `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn tracing off whatever else is set.

`OTEL_SERVICE_NAME` names the service (default `jobwire`). Every server owns its tracer provider instead
of installing a global one, so that several servers (tests) keep their spans apart. When tracing is off,
`Tracing.enabled` is False and the instrumentation creates no spans at all (the SDK is not imported).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

from opentelemetry import trace

from jobwire.server.version import jobwire_version

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

INSTRUMENTATION = "jobwire.server"


class Tracing:
    """A tracer for one server: real when built with a provider, a no-op otherwise."""

    def __init__(self, provider: TracerProvider | None = None, *, owned: bool = False) -> None:
        self.provider = provider
        self.enabled = provider is not None
        self._owned = owned
        self.tracer: trace.Tracer = (
            provider.get_tracer(INSTRUMENTATION, jobwire_version())
            if provider is not None
            else trace.NoOpTracer()
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Tracing:
        """Tracing as the environment configures it (see the module docstring)."""
        env = os.environ if env is None else env
        choice = env.get("JOBWIRE_OTEL", "").strip().lower()
        disabled = (
            env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
            or env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none"
            or choice in ("none", "off", "0", "false")
        )
        otlp = choice == "otlp" or bool(
            env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        )
        if disabled or (choice != "console" and not otlp):
            return cls()
        return cls(
            _provider(console=choice == "console", service_name=env.get("OTEL_SERVICE_NAME")), owned=True
        )

    def shutdown(self) -> None:
        """Flushes and stops the exporter, if this object made it."""
        if self._owned and self.provider is not None:
            self.provider.shutdown()


def _provider(*, console: bool, service_name: str | None) -> TracerProvider:
    # Imported here: without an exporter configured, the SDK and the exporters are never loaded.
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    resource = Resource.create(
        {"service.name": service_name or "jobwire", "service.version": jobwire_version()}
    )
    provider = TracerProvider(resource=resource)
    exporter: SpanExporter
    if console:
        # stderr: stdout belongs to the command's own output (`jobwire dev` prints its URLs there).
        exporter = ConsoleSpanExporter(out=sys.stderr)
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider
