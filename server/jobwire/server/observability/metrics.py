"""The metrics a jobwire server records as things happen: RPCs, dispatch, results, webhooks, rate limits.

Every server has its own `CollectorRegistry` (tests run several servers in one process; the global
registry would mix them). The gauges read from Postgres at scrape time (jobs by state, queue depth) are
in `gauges.py`; `Metrics.render` exposes both.

Names follow Prometheus conventions: `_total` counters, `_seconds` histograms, base units.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder

from jobwire.server.version import jobwire_version

#: From a few milliseconds (an idle worker takes a job at once) to hours (a deep queue, a long run).
JOB_SECONDS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
    1800,
    3600,
    7200,
)
#: RPCs: unary calls take milliseconds; status-sync and runsync hold for up to minutes.
RPC_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    """The counters and histograms of one server, and the functions that record them.

    Other modules call the methods (`webhook_delivered`, `rate_limited`, ...) rather than touching the
    metric objects, so names and labels are decided here once.
    """

    def __init__(self, registry: CollectorRegistry | None = None, *, process_metrics: bool = True) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # No `_created` series next to every counter and histogram: they double the series count and
        # nothing here reads them. (A process-wide switch of prometheus_client; it is idempotent.)
        disable_created_metrics()  # type: ignore[no-untyped-call]
        if process_metrics:
            # process_* (CPU, memory, file descriptors), python_info and python_gc_*, as the global
            # registry would have them.
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)
        Info("jobwire_build", "The running jobwire's version.", registry=r).info(
            {"version": jobwire_version()}
        )

        rpc_labels = ["service", "method", "transport"]
        self.rpc_handled = Counter(
            "jobwire_rpc_handled",
            "RPCs completed, by method, transport (grpc, or http: the REST facade) and gRPC status code.",
            [*rpc_labels, "code"],
            registry=r,
        )
        self.rpc_seconds = Histogram(
            "jobwire_rpc_duration_seconds",
            "Time from the start of an RPC to its end (a stream's whole life for streaming RPCs).",
            rpc_labels,
            buckets=RPC_SECONDS,
            registry=r,
        )
        self.rpc_in_flight = Gauge(
            "jobwire_rpc_in_flight", "RPCs running now (worker streams included).", rpc_labels, registry=r
        )
        self.dispatched = Counter(
            "jobwire_jobs_dispatched", "Attempts handed to workers of this replica.", ["endpoint"], registry=r
        )
        self.claims = Counter(
            "jobwire_claims",
            "Claims of this replica's dispatcher, by whether they found jobs (found) or none (empty).",
            ["endpoint", "outcome"],
            registry=r,
        )
        self.delay_seconds = Histogram(
            "jobwire_job_delay_seconds",
            "Time an attempt waited in the queue (Runpod's delayTime), observed when its result is stored.",
            ["endpoint"],
            buckets=JOB_SECONDS,
            registry=r,
        )
        self.execution_seconds = Histogram(
            "jobwire_job_execution_seconds",
            "Time an attempt ran (Runpod's executionTime), observed when its result is stored.",
            ["endpoint", "status"],
            buckets=JOB_SECONDS,
            registry=r,
        )
        self.requeues = Counter(
            "jobwire_job_requeues",
            "Running attempts given up by their worker: requeued, or failed when out of attempts.",
            ["reason", "outcome"],
            registry=r,
        )
        self.webhooks = Counter(
            "jobwire_webhook_deliveries",
            "Webhook delivery attempts by outcome.",
            ["endpoint", "outcome"],
            registry=r,
        )
        self.rate_limits = Counter(
            "jobwire_rate_limited",
            "Requests refused by a rate limit.",
            ["endpoint", "operation"],
            registry=r,
        )

    # --- for the parts of the server that own the events ------------------------------------------

    def webhook_delivered(self, endpoint: str, outcome: str) -> None:
        """One webhook delivery attempt ended: `outcome` is e.g. `delivered`, `failed`, `gave_up`."""
        self.webhooks.labels(endpoint, outcome).inc()

    def rate_limited(self, endpoint: str, operation: str) -> None:
        """A request was refused by a rate limit; `operation` is the RPC or route (e.g. `Run`)."""
        self.rate_limits.labels(endpoint, operation).inc()

    def job_dispatched(self, endpoint: str) -> None:
        self.dispatched.labels(endpoint).inc()

    def claimed(self, endpoint: str, jobs: int) -> None:
        self.claims.labels(endpoint, "found" if jobs else "empty").inc()

    def result_stored(self, endpoint: str, status: str, delay_s: float, execution_s: float) -> None:
        """A worker's result ended an attempt: its queue delay and execution time."""
        self.delay_seconds.labels(endpoint).observe(delay_s)
        self.execution_seconds.labels(endpoint, status).observe(execution_s)

    def requeued(self, reason: str, outcome: str, count: int = 1) -> None:
        """`count` running attempts were given up: `outcome` is `requeued` or `failed`."""
        if count:
            self.requeues.labels(reason, outcome).inc(count)

    # --- exposition --------------------------------------------------------------------------------

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition (Prometheus text, or OpenMetrics when the scraper asks for it) and its type."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type
