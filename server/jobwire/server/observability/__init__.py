"""Observability for the jobwire server: Prometheus metrics, structured logs, OpenTelemetry traces.

Any layer may import this package: it imports nothing of jobwire but `jobwire.server.model` (a test
checks), and the layers hand it what it needs (the stats query, the worker sessions) as callables.

- `Observability` bundles one server's `Metrics`, `Tracing` and probes; `JobwireServer.observability`.
- `log_context(...)`, `configure_logging(...)`: structured logs (JSON with `--log-json`).
"""

from __future__ import annotations

from jobwire.server.observability.dispatch import DispatchObserver
from jobwire.server.observability.hub import Observability
from jobwire.server.observability.logs import (
    ContextFilter,
    JsonFormatter,
    TextFormatter,
    configure_logging,
    current_fields,
    log_context,
)
from jobwire.server.observability.metrics import Metrics
from jobwire.server.observability.rpc import RpcObserver, RpcProbe
from jobwire.server.observability.tracing import Tracing
from jobwire.server.version import jobwire_version

__all__ = [
    "ContextFilter",
    "DispatchObserver",
    "JsonFormatter",
    "Metrics",
    "Observability",
    "RpcObserver",
    "RpcProbe",
    "TextFormatter",
    "Tracing",
    "configure_logging",
    "current_fields",
    "jobwire_version",
    "log_context",
]
