"""`Observability`: one server's metrics, tracing and scrape endpoint, made once and handed to the layers."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from jobwire.server.observability.dispatch import DispatchObserver
from jobwire.server.observability.gauges import ScrapeCollector, SessionsOf, StatsFetch
from jobwire.server.observability.metrics import Metrics
from jobwire.server.observability.rpc import RpcObserver
from jobwire.server.observability.tracing import Tracing


class Observability:
    """Everything one server records.

    `metrics` has the functions other parts call (`metrics.webhook_delivered(...)`,
    `metrics.rate_limited(...)`); `rpc` instruments the RPC table; `dispatch` the dispatcher.
    `stats_max_age_s` is how long a scrape's database figures are reused (0 in tests: always fresh).
    """

    def __init__(
        self, *, metrics: Metrics | None = None, tracing: Tracing | None = None, stats_max_age_s: float = 1.0
    ) -> None:
        self.metrics = metrics or Metrics()
        self.tracing = tracing or Tracing()
        self.rpc = RpcObserver(self.metrics, self.tracing)
        self.dispatch = DispatchObserver(self.metrics, self.tracing)
        self.stats_max_age_s = stats_max_age_s
        self.scrape: ScrapeCollector | None = None

    @classmethod
    def from_env(cls) -> Observability:
        """Metrics always; traces when the environment configures an exporter (see `tracing`)."""
        return cls(tracing=Tracing.from_env())

    def watch(self, fetch: StatsFetch, sessions: SessionsOf) -> None:
        """Adds the scrape-time gauges: job figures from `fetch`, workers from `sessions`."""
        self.scrape = ScrapeCollector(fetch, sessions, max_age_s=self.stats_max_age_s)
        self.metrics.registry.register(self.scrape)

    async def metrics_endpoint(self, request: Request) -> Response:
        """`GET /metrics`: the Prometheus exposition (OpenMetrics when the scraper asks for it)."""
        if self.scrape is not None:
            await self.scrape.refresh()
        body, content_type = self.metrics.render(request.headers.get("accept"))
        return Response(body, media_type=content_type)

    def shutdown(self) -> None:
        """Flushes pending spans (when this object set up the exporter)."""
        self.tracing.shutdown()
