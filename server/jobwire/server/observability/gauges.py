"""Gauges computed at scrape time: jobs by state, queue depth and oldest queued age per endpoint (what an
autoscaler such as KEDA reads), and the workers connected to this replica by state.

The job figures come from one query (`store/stats.py`, handed in as `fetch`), run at most once per
`max_age_s` however many scrapers ask: concurrent scrapes wait for the one query in flight, and a failed
query is not retried before `max_age_s` either, so scrapes cannot pile load on a struggling database.
While the query fails, the job gauges are left out (a stale queue depth would mislead an autoscaler)
and `jobwire_stats_up` is 0.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Protocol

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from jobwire.server.model import JobStatus

log = logging.getLogger("jobwire.metrics")

WORKER_STATES = ("idle", "running", "draining")


class EndpointStats(Protocol):
    """One endpoint's figures, as the stats query returns them."""

    @property
    def endpoint(self) -> str: ...
    @property
    def jobs(self) -> Mapping[str, int]: ...  # status -> jobs (live: not expired, results retained)
    @property
    def oldest_queued_age_s(self) -> float: ...  # 0 when nothing is queued


class Session(Protocol):
    """The part of a connected worker's session that the worker gauges read."""

    @property
    def endpoint(self) -> str: ...
    @property
    def draining(self) -> bool: ...
    @property
    def in_flight(self) -> Mapping[str, int]: ...


StatsFetch = Callable[[], Awaitable[Sequence[EndpointStats]]]
SessionsOf = Callable[[], Iterable[Session]]


def worker_state(session: Session) -> str:
    if session.draining:
        return "draining"
    return "running" if session.in_flight else "idle"


class ScrapeCollector(Collector):
    """A prometheus_client collector over the latest stats snapshot; `refresh()` (async) before each
    exposition, since `collect()` is called synchronously and must not query."""

    def __init__(self, fetch: StatsFetch, sessions: SessionsOf, *, max_age_s: float = 1.0) -> None:
        self._fetch = fetch
        self._sessions = sessions
        self.max_age_s = max_age_s
        self._rows: Sequence[EndpointStats] = ()
        self._up = False
        self._taken: float | None = None
        self._lock = asyncio.Lock()
        #: How many times the query ran (a test checks that scrapes share it).
        self.queries = 0

    def _fresh(self) -> bool:
        return self._taken is not None and time.monotonic() - self._taken < self.max_age_s

    async def refresh(self) -> None:
        if self._fresh():
            return
        async with self._lock:
            if self._fresh():  # another scrape refreshed it while this one waited
                return
            self.queries += 1
            try:
                self._rows, self._up = await self._fetch(), True
            except Exception as exc:
                log.warning("the job statistics query failed: %s", exc)
                self._rows, self._up = (), False
            self._taken = time.monotonic()

    def describe(self) -> Iterable[Metric]:
        # The names, without querying: registration checks them for clashes.
        return self._families()

    def collect(self) -> Iterable[Metric]:
        jobs, depth, oldest, workers, up = self._families()
        up.add_metric([], 1.0 if self._up else 0.0)
        endpoints: set[str] = set()
        for row in self._rows:
            endpoints.add(row.endpoint)
            for status in JobStatus:
                jobs.add_metric([row.endpoint, str(status)], float(row.jobs.get(str(status), 0)))
            depth.add_metric([row.endpoint], float(row.jobs.get(str(JobStatus.IN_QUEUE), 0)))
            oldest.add_metric([row.endpoint], row.oldest_queued_age_s)
        counts: dict[tuple[str, str], int] = {}
        for session in self._sessions():
            endpoints.add(session.endpoint)
            key = (session.endpoint, worker_state(session))
            counts[key] = counts.get(key, 0) + 1
        # Every state of every known endpoint, zeros included: a series that vanishes reads as "no data".
        for endpoint in sorted(endpoints):
            for state in WORKER_STATES:
                workers.add_metric([endpoint, state], float(counts.get((endpoint, state), 0)))
        return [jobs, depth, oldest, workers, up]

    @staticmethod
    def _families() -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily(
                "jobwire_jobs",
                "Jobs by endpoint and state (ended jobs count while their results are retained).",
                labels=["endpoint", "state"],
            ),
            GaugeMetricFamily("jobwire_queue_depth", "Jobs waiting in the queue.", labels=["endpoint"]),
            GaugeMetricFamily(
                "jobwire_queue_oldest_age_seconds",
                "How long the oldest queued job has waited (0 when the queue is empty).",
                labels=["endpoint"],
            ),
            GaugeMetricFamily(
                "jobwire_workers",
                "Workers connected to this replica, by state (idle, running, draining).",
                labels=["endpoint", "state"],
            ),
            GaugeMetricFamily("jobwire_stats_up", "1 when the job statistics query last succeeded."),
        ]
