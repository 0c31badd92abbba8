"""Metrics, the scrape-time gauges and tracing set-up, without a server; and the package's import rule."""

from __future__ import annotations

import ast
import asyncio
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.trace import NoOpTracer
from prometheus_client.parser import text_string_to_metric_families

import jobwire.server.observability as observability
from jobwire.server.observability import Metrics, Observability, Tracing
from jobwire.server.observability.gauges import EndpointStats, ScrapeCollector


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = metrics.render()[0].decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_counters_for_other_parts_of_the_server() -> None:
    metrics = Metrics(process_metrics=False)
    metrics.webhook_delivered("ep", "delivered")
    metrics.webhook_delivered("ep", "failed")
    metrics.webhook_delivered("ep", "failed")
    metrics.rate_limited("ep", "Run")
    metrics.requeued("lease_expired", "failed", 0)  # nothing happened: no series
    found = samples(metrics)
    key = "jobwire_webhook_deliveries_total"
    assert found[(key, frozenset({("endpoint", "ep"), ("outcome", "failed")}))] == 2
    assert found[(key, frozenset({("endpoint", "ep"), ("outcome", "delivered")}))] == 1
    assert found[("jobwire_rate_limited_total", frozenset({("endpoint", "ep"), ("operation", "Run")}))] == 1
    assert not any(name == "jobwire_job_requeues_total" for name, _ in found)
    assert not any(name.startswith("process_") for name, _ in found)


def test_every_instance_has_its_own_registry() -> None:
    one, two = Metrics(), Metrics()
    one.rate_limited("ep", "Run")
    assert ("jobwire_rate_limited_total", frozenset({("endpoint", "ep"), ("operation", "Run")})) in samples(
        one
    )
    assert not any(name == "jobwire_rate_limited_total" for name, _ in samples(two))
    assert any(name == "process_cpu_seconds_total" for name, _ in samples(two))


@dataclass(frozen=True)
class Stats:
    endpoint: str
    jobs: Mapping[str, int] = field(default_factory=dict)
    oldest_queued_age_s: float = 0.0


@dataclass
class Session:
    endpoint: str
    draining: bool = False
    in_flight: dict[str, int] = field(default_factory=dict)


class Database:
    """Stands in for the stats query: counts its calls, holds them until released, can fail."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()
        self.fail = False

    async def fetch(self) -> Sequence[EndpointStats]:
        self.calls += 1
        await self.release.wait()
        if self.fail:
            raise ConnectionError("the database is gone")
        return [Stats("ep", {"IN_QUEUE": 3, "COMPLETED": 1}, 7.5)]


async def test_concurrent_scrapes_share_one_query_and_a_failure_drops_the_job_gauges() -> None:
    database = Database()
    sessions = [Session("ep"), Session("ep", in_flight={"j": 1}), Session("other", draining=True)]
    collector = ScrapeCollector(database.fetch, lambda: sessions, max_age_s=3600)
    refreshes = [asyncio.ensure_future(collector.refresh()) for _ in range(5)]
    await asyncio.sleep(0)
    database.release.set()
    await asyncio.gather(*refreshes)
    assert database.calls == 1
    by_name = {f.name: {tuple(s.labels.values()): s.value for s in f.samples} for f in collector.collect()}
    assert by_name["jobwire_queue_depth"] == {("ep",): 3}
    assert by_name["jobwire_queue_oldest_age_seconds"] == {("ep",): 7.5}
    assert (
        by_name["jobwire_jobs"][("ep", "COMPLETED")] == 1 and by_name["jobwire_jobs"][("ep", "FAILED")] == 0
    )
    assert by_name["jobwire_workers"] == {
        ("ep", "idle"): 1, ("ep", "running"): 1, ("ep", "draining"): 0,
        ("other", "idle"): 0, ("other", "running"): 0, ("other", "draining"): 1,
    }  # fmt: skip
    assert by_name["jobwire_stats_up"] == {(): 1}

    collector.max_age_s = 0
    database.fail = True
    await collector.refresh()
    by_name = {f.name: {tuple(s.labels.values()): s.value for s in f.samples} for f in collector.collect()}
    assert database.calls == 2 and by_name["jobwire_stats_up"] == {(): 0}
    assert by_name["jobwire_queue_depth"] == {}  # no stale depth for an autoscaler to act on
    assert by_name["jobwire_workers"][("ep", "running")] == 1  # in-memory figures stay


@pytest.mark.parametrize(
    ("env", "enabled"),
    [
        ({}, False),
        ({"JOBWIRE_OTEL": "console"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4317"}, True),
        ({"JOBWIRE_OTEL": "otlp"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_TRACES_EXPORTER": "none"}, False),
        ({"JOBWIRE_OTEL": "none"}, False),
    ],
)
def test_tracing_is_on_only_when_an_exporter_is_configured(env: dict[str, str], enabled: bool) -> None:
    tracing = Tracing.from_env(env)
    try:
        assert tracing.enabled is enabled
        assert (tracing.provider is not None) is enabled
        assert isinstance(tracing.tracer, NoOpTracer) is not enabled
    finally:
        tracing.shutdown()


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP trace receiver: what a collector (Jaeger, Tempo, the OpenTelemetry Collector) would get."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, dict[str, str], dict[str, str]]] = []

    def Export(  # the generated servicer's method name
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: object
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes = {a.key: a.value.string_value for a in span.attributes}
                    self.spans.append((span.name, attributes, resource))
        return trace_service_pb2.ExportTraceServiceResponse()


def test_spans_reach_an_otlp_collector(monkeypatch: pytest.MonkeyPatch) -> None:
    collector = Collector()
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        # The exporter reads the standard variables itself.
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("OTEL_SERVICE_NAME", "jobwire-otlp-test")
        tracing = Tracing.from_env()
        tracing.tracer.start_span("otlp-probe", attributes={"jobwire.job_id": "j1"}).end()
        tracing.shutdown()  # flushes the batch
    finally:
        server.stop(None)
    ((name, attributes, resource),) = collector.spans
    assert name == "otlp-probe" and attributes["jobwire.job_id"] == "j1"
    assert resource["service.name"] == "jobwire-otlp-test"


def test_the_console_exporter_writes_spans_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    tracing = Tracing.from_env({"JOBWIRE_OTEL": "console", "OTEL_SERVICE_NAME": "jobwire-test"})
    tracing.tracer.start_span("console-probe", attributes={"jobwire.job_id": "j1"}).end()
    tracing.shutdown()  # flushes
    captured = capsys.readouterr()
    assert captured.out == ""
    assert '"name": "console-probe"' in captured.err and '"jobwire.job_id": "j1"' in captured.err
    assert "jobwire-test" in captured.err


def test_an_observability_without_a_database_serves_what_it_has() -> None:
    hub = Observability()
    assert hub.scrape is None and not hub.tracing.enabled
    body, content_type = hub.metrics.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text") and body.rstrip().endswith(b"# EOF")


def test_the_package_imports_nothing_of_jobwire_but_the_model_errors_and_version() -> None:
    allowed = {"jobwire.server.model", "jobwire.server.errors", "jobwire.server.version"}
    package = Path(observability.__file__).parent
    for source in package.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for name in names:
                if name.startswith("jobwire.") and not name.startswith("jobwire.server.observability"):
                    assert name in allowed, f"{source.name} imports {name}"
