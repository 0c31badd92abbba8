"""Metrics, traces and structured logs of a live jobwire: /metrics on its HTTP port, spans in an in-memory
exporter, and `jobwire serve --log-json` as a real process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client.parser import text_string_to_metric_families

from jobwire.server.clock import ManualClock
from jobwire.server.observability import ContextFilter, Observability, Tracing
from jobwire.v1 import jobs_pb2
from server_fixtures import ENDPOINT, OTHER, Running, running, start_jobwire
from worker_fixtures import RawWorker

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, by name and label set."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def scrape(service: Running) -> Samples:
    response = await service.http.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


async def scrape_until(service: Running, name: str, wanted: float, **labels: str) -> Samples:
    """Scrapes until the sample has the wanted value (results and sessions land asynchronously)."""
    while value(samples := await scrape(service), name, **labels) != wanted:
        await asyncio.sleep(0.02)
    return samples


@pytest.fixture
async def service(database_url: str, clock: ManualClock) -> AsyncIterator[Running]:
    # stats_max_age_s=0: every scrape queries, so a test sees its own changes at once.
    server = await start_jobwire(database_url, clock=clock, observability=Observability(stats_max_age_s=0))
    async with running(server) as service:
        yield service


async def submit(service: Running, endpoint: str = ENDPOINT, key: str = "client") -> str:
    response = await service.http.post(
        f"/v2/{endpoint}/run", json={"input": {"n": 1}}, headers=service.headers(key)
    )
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


async def test_queue_depth_oldest_age_and_jobs_by_state_per_endpoint(
    service: Running, clock: ManualClock
) -> None:
    samples = await scrape(service)
    for endpoint in (ENDPOINT, OTHER):  # every endpoint is there, empty ones with zeros (KEDA reads 0)
        assert value(samples, "jobwire_queue_depth", endpoint=endpoint) == 0
        assert value(samples, "jobwire_queue_oldest_age_seconds", endpoint=endpoint) == 0
        assert value(samples, "jobwire_jobs", endpoint=endpoint, state="COMPLETED") == 0
    assert value(samples, "jobwire_stats_up") == 1

    first = await submit(service)
    clock.advance(seconds=30)
    await submit(service)
    await submit(service, OTHER, "other")
    clock.advance(seconds=12)
    cancelled = await service.http.post(f"/v2/{ENDPOINT}/cancel/{first}", headers=service.headers())
    assert cancelled.json()["status"] == "CANCELLED"

    samples = await scrape(service)
    assert value(samples, "jobwire_queue_depth", endpoint=ENDPOINT) == 1
    assert value(samples, "jobwire_jobs", endpoint=ENDPOINT, state="IN_QUEUE") == 1
    assert value(samples, "jobwire_jobs", endpoint=ENDPOINT, state="CANCELLED") == 1
    # The oldest job still queued is the second one, submitted 12 s before the scrape.
    assert value(samples, "jobwire_queue_oldest_age_seconds", endpoint=ENDPOINT) == pytest.approx(12)
    assert value(samples, "jobwire_queue_oldest_age_seconds", endpoint=OTHER) == pytest.approx(12)
    assert value(samples, "jobwire_queue_depth", endpoint=OTHER) == 1


async def test_rpcs_are_counted_by_method_code_and_transport(service: Running) -> None:
    await submit(service)
    unknown = await service.http.get(f"/v2/{ENDPOINT}/status/nope", headers=service.headers())
    assert unknown.status_code == 404
    assert (await service.http.get(f"/v2/{ENDPOINT}/health")).status_code == 401
    await service.stub.Health(jobs_pb2.HealthRequest(endpoint_id=ENDPOINT), metadata=service.metadata())

    samples = await scrape(service)
    rpc = {"service": "jobwire.v1.JobService"}
    handled = "jobwire_rpc_handled_total"
    assert value(samples, handled, **rpc, method="Run", transport="http", code="OK") == 1
    assert value(samples, handled, **rpc, method="Status", transport="http", code="NOT_FOUND") == 1
    assert value(samples, handled, **rpc, method="Health", transport="http", code="UNAUTHENTICATED") == 1
    assert value(samples, handled, **rpc, method="Health", transport="grpc", code="OK") == 1
    assert value(samples, "jobwire_rpc_duration_seconds_count", **rpc, method="Run", transport="http") == 1
    assert value(samples, "jobwire_rpc_in_flight", **rpc, method="Run", transport="http") == 0


async def test_delay_and_execution_histograms_and_workers_by_state(
    service: Running, clock: ManualClock
) -> None:
    job_id = await submit(service)
    clock.advance(seconds=5)  # five seconds in the queue
    worker = RawWorker(service.channel, service.keys["worker"], ENDPOINT, "w1")
    await worker.start()
    assign = await worker.assignment()
    assert assign.job_id == job_id
    samples = await scrape_until(service, "jobwire_workers", 1, endpoint=ENDPOINT, state="running")
    assert value(samples, "jobwire_workers", endpoint=ENDPOINT, state="idle") == 0
    assert value(samples, "jobwire_jobs_dispatched_total", endpoint=ENDPOINT) == 1
    assert value(samples, "jobwire_jobs", endpoint=ENDPOINT, state="IN_PROGRESS") == 1

    clock.advance(seconds=3)  # three seconds of work
    worker.result(assign, output=b'{"ok": true}')
    execution = {"endpoint": ENDPOINT, "status": "COMPLETED"}
    samples = await scrape_until(service, "jobwire_job_execution_seconds_count", 1, **execution)
    assert value(samples, "jobwire_job_execution_seconds_sum", **execution) == pytest.approx(3)
    assert value(samples, "jobwire_job_execution_seconds_bucket", **execution, le="2.5") == 0
    assert value(samples, "jobwire_job_execution_seconds_bucket", **execution, le="5.0") == 1
    assert value(samples, "jobwire_job_delay_seconds_count", endpoint=ENDPOINT) == 1
    assert value(samples, "jobwire_job_delay_seconds_sum", endpoint=ENDPOINT) == pytest.approx(5)
    # The job counts come from the scrape's query, which may have read the table just before the result
    # committed while the histograms (observed at the commit) are read after it: a later scrape has it.
    await scrape_until(service, "jobwire_jobs", 1, endpoint=ENDPOINT, state="COMPLETED")
    assert service.server.observability.dispatch.tracked == 0  # nothing kept once the result is in
    await scrape_until(service, "jobwire_workers", 1, endpoint=ENDPOINT, state="idle")

    worker.send(heartbeat={"draining": True})
    await scrape_until(service, "jobwire_workers", 1, endpoint=ENDPOINT, state="draining")
    worker.close()
    await scrape_until(service, "jobwire_workers", 0, endpoint=ENDPOINT, state="draining")


async def test_a_worker_leaving_mid_job_counts_a_requeue(service: Running) -> None:
    await submit(service)
    worker = RawWorker(service.channel, service.keys["worker"], ENDPOINT, "w1")
    await worker.start()
    await worker.assignment()
    worker.call.cancel()
    labels = {"reason": "worker_left", "outcome": "requeued"}
    await scrape_until(service, "jobwire_job_requeues_total", 1, **labels)
    # The counter moves when the dispatcher gives the job up, a moment before the requeue commits.
    await scrape_until(service, "jobwire_queue_depth", 1, endpoint=ENDPOINT)
    assert service.server.observability.dispatch.tracked == 0


async def test_counters_for_webhooks_and_rate_limits_are_exposed(service: Running) -> None:
    metrics = service.server.observability.metrics
    metrics.webhook_delivered(ENDPOINT, "delivered")
    metrics.webhook_delivered(ENDPOINT, "delivered")
    metrics.rate_limited(ENDPOINT, "Run")
    samples = await scrape(service)
    assert value(samples, "jobwire_webhook_deliveries_total", endpoint=ENDPOINT, outcome="delivered") == 2
    assert value(samples, "jobwire_rate_limited_total", endpoint=ENDPOINT, operation="Run") == 1
    assert value(samples, "jobwire_build_info", version=metrics_version(samples)) == 1
    assert any(name == "process_cpu_seconds_total" for name, _ in samples)


def metrics_version(samples: Samples) -> str:
    (labels,) = [dict(labels) for name, labels in samples if name == "jobwire_build_info"]
    return labels["version"]


async def test_openmetrics_when_the_scraper_asks(service: Running) -> None:
    response = await service.http.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


async def test_scrapes_share_one_query_per_interval_and_servers_keep_their_own_registry(
    database_url: str,
) -> None:
    cached = Observability(stats_max_age_s=3600)
    async with running(await start_jobwire(database_url, observability=cached)) as service:
        first, second = await asyncio.gather(*(service.http.get("/metrics") for _ in range(2)))
        await service.http.get("/metrics")
        assert first.status_code == second.status_code == 200
        assert cached.scrape is not None and cached.scrape.queries == 1
        await submit(service)
        # A second server in the same process, on the same database: its RPC counters start at zero.
        other = await start_jobwire(database_url)
        async with running(other, service.keys) as second_service:
            samples = await scrape(second_service)
            labels = {"service": "jobwire.v1.JobService", "method": "Run", "transport": "http", "code": "OK"}
            assert value(samples, "jobwire_rpc_handled_total", **labels) is None
            assert value(await scrape(service), "jobwire_rpc_handled_total", **labels) == 1


# --- traces -------------------------------------------------------------------------------------------


@pytest.fixture
async def traced(database_url: str) -> AsyncIterator[tuple[Running, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    server = await start_jobwire(database_url, observability=Observability(tracing=Tracing(provider)))
    async with running(server) as service:
        yield service, exporter


def spans_of(exporter: InMemorySpanExporter, job_id: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if (s.attributes or {}).get("jobwire.job_id") == job_id]


async def test_spans_from_submit_to_result_carry_the_job_id(
    traced: tuple[Running, InMemorySpanExporter],
) -> None:
    service, exporter = traced
    job_id = await submit(service)
    worker = RawWorker(service.channel, service.keys["worker"], ENDPOINT, "w1")
    await worker.start()
    assign = await worker.assignment()
    worker.result(assign, output=b"42")
    while not any(s.name == "jobwire.result" for s in spans_of(exporter, job_id)):
        await asyncio.sleep(0.02)
    await service.stub.Status(
        jobs_pb2.StatusRequest(endpoint_id=ENDPOINT, job_id=job_id),
        metadata=(
            *service.metadata(),
            ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ),
    )
    worker.close()

    spans = {s.name: s for s in spans_of(exporter, job_id)}
    run = spans["jobwire.v1.JobService/Run"]
    assert run.kind is SpanKind.SERVER
    assert run.attributes is not None and run.attributes["rpc.system"] == "grpc"
    assert run.attributes["rpc.method"] == "Run" and run.attributes["rpc.grpc.status_code"] == 0
    assert run.attributes["jobwire.transport"] == "http" and run.attributes["jobwire.endpoint"] == ENDPOINT
    dispatch, result = spans["jobwire.dispatch"], spans["jobwire.result"]
    assert dispatch.attributes is not None and dispatch.attributes["jobwire.worker_id"] == "w1"
    assert result.attributes is not None and result.attributes["jobwire.status"] == "COMPLETED"
    assert [link.context.span_id for link in result.links] == [dispatch.context.span_id]
    status = spans["jobwire.v1.JobService/Status"]
    # A caller's W3C traceparent (gRPC metadata) makes the RPC's span a child of the caller's.
    assert status.parent is not None and status.parent.span_id == 0xB7AD6B7169203331
    assert status.context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C


async def test_a_failed_rpc_span_has_its_code(traced: tuple[Running, InMemorySpanExporter]) -> None:
    service, exporter = traced
    response = await service.http.get(f"/v2/{ENDPOINT}/status/missing", headers=service.headers())
    assert response.status_code == 404
    (span,) = spans_of(exporter, "missing")
    assert span.attributes is not None and span.attributes["rpc.grpc.status_code"] == 5  # NOT_FOUND
    # A caller's mistake is not the server's error (OpenTelemetry's rule for gRPC server spans).
    assert span.status.status_code is StatusCode.UNSET


async def test_without_an_exporter_no_spans_are_made(jobwire: Running) -> None:
    tracing = jobwire.server.observability.tracing
    assert not tracing.enabled and tracing.provider is None


# --- structured logs ------------------------------------------------------------------------------------


async def test_serve_with_log_json_prints_one_json_object_per_line_with_request_and_job_ids(
    database_url: str,
) -> None:
    command = [sys.executable, "-m", "jobwire.server"]
    db = ["--database-url", database_url]
    setup = await asyncio.create_subprocess_exec(*command, "endpoint", "create", "logs", *db)
    assert await setup.wait() == 0
    keys = await asyncio.create_subprocess_exec(
        *command,
        "key",
        "create",
        "--role",
        "client",
        "--endpoint",
        "logs",
        *db,
        stdout=asyncio.subprocess.PIPE,
    )
    key = (await keys.communicate())[0].decode().strip()
    process = await asyncio.create_subprocess_exec(
        *command, "serve", *db, "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--log-json",
        env={**os.environ, "JOBWIRE_LOG_LEVEL": "debug"}, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    lines: list[dict[str, object]] = []
    try:
        while not any("jobwire serving" in str(line["message"]) for line in lines):
            raw = await asyncio.wait_for(process.stderr.readline(), timeout=60)
            assert raw, f"serve exited early: {lines}"
            lines.append(json.loads(raw))
        http_url = re.search(r"HTTP on (http://\S+)", str(lines[-1]["message"])).group(1)  # type: ignore[union-attr]
        async with httpx.AsyncClient(base_url=http_url) as http:
            response = await http.post(
                "/v2/logs/run", json={"input": 1}, headers={"Authorization": key, "X-Request-Id": "req-123"}
            )
        job_id = response.json()["id"]
        while True:
            raw = await asyncio.wait_for(process.stderr.readline(), timeout=60)
            assert raw, f"serve exited early: {lines}"
            line = json.loads(raw)  # every line is one JSON object
            lines.append(line)
            if line.get("request_id") == "req-123":
                break
    finally:
        process.send_signal(signal.SIGTERM)
        rest = (await asyncio.wait_for(process.communicate(), timeout=30))[1]
    assert process.returncode == 0
    lines += [json.loads(raw) for raw in rest.splitlines()]
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    (rpc,) = [line for line in lines if line.get("request_id") == "req-123"]
    assert rpc["job_id"] == job_id and rpc["endpoint"] == "logs" and rpc["logger"] == "jobwire.rpc"
    assert rpc["level"] == "DEBUG" and "JobService/Run http OK" in str(rpc["message"])


async def test_the_dispatcher_logs_with_the_worker_and_endpoint(jobwire: Running) -> None:
    await submit(jobwire)
    with _captured("jobwire.dispatch") as records:
        worker = RawWorker(jobwire.channel, jobwire.keys["worker"], ENDPOINT, "w-logs")
        await worker.start()
        await worker.assignment()
        worker.call.cancel()
        while not records:
            await asyncio.sleep(0.02)
    (record,) = records
    assert "w-logs" in record.getMessage()
    assert record.jobwire_context["worker_id"] == "w-logs"  # type: ignore[attr-defined]
    assert record.jobwire_context["endpoint"] == ENDPOINT  # type: ignore[attr-defined]


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []
        self.addFilter(ContextFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def _captured(name: str) -> Iterator[list[logging.LogRecord]]:
    """The records of one logger (and its children) at INFO and above, with their context fields."""
    handler, logger = _Records(), logging.getLogger(name)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
