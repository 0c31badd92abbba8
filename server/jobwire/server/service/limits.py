"""Rate limits and queue admission, per endpoint and operation, for the service as a whole.

The rules are Runpod's: each operation of an endpoint may be called `limit` times per 10-second window,
or `running_workers x per_worker` times when that is more; and new jobs are refused while the queue holds
more than both 50 jobs and `workersMax x 500`. Refusals are `RateLimited` (HTTP 429 with Retry-After,
gRPC RESOURCE_EXHAUSTED with a `retry-after` trailer).

Replicas share each window through Postgres without a write per request: a replica counts locally and
adds its count to the window's row in one batched upsert (every `flush_interval_s`, or at once when its
unflushed count reaches `flush_share` of the limit), reading back the total of all replicas. A replica
admits while the last total it read plus its own unflushed count is under the limit, so the service as a
whole can overshoot a window by at most `flush_share` of the limit per replica. Limits of a few requests
(purge-queue: 2) therefore flush on every request and are exact.

When the database cannot be reached, counting goes on locally and requests are judged on what is known:
a limiter must not turn a database outage into a refusal of every request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from jobwire.server.clock import Clock
from jobwire.server.errors import RateLimited
from jobwire.server.model import Endpoint, RateLimit
from jobwire.server.store.limits import LimitStore, WindowKey
from jobwire.server.store.workers import WorkerStore

log = logging.getLogger("jobwire.limits")

#: Runpod's published limits per 10 s; `per_worker` after its example (50 per worker on a 2,000 base).
DEFAULT_LIMITS: Mapping[str, RateLimit] = {
    "run": RateLimit(1000, 25),
    "runsync": RateLimit(2000, 50),
    "status": RateLimit(2000, 50),
    "cancel": RateLimit(100, 5),
    "purge-queue": RateLimit(2),
    "requests": RateLimit(10),
    "openai": RateLimit(2000, 50),
}

#: The queue-size rule: refuse new jobs beyond max(QUEUE_FLOOR, workersMax x QUEUE_PER_WORKER).
QUEUE_FLOOR = 50
QUEUE_PER_WORKER = 500


@dataclass(frozen=True)
class LimitSettings:
    enabled: bool = True
    window_s: int = 10
    #: How often unflushed counts are added to the shared windows.
    flush_interval_s: float = 0.25
    #: A replica flushes at once when its unflushed count reaches this share of a limit.
    flush_share: float = 0.1
    #: How long a count of running workers or of queued jobs is trusted (on the injected clock).
    workers_cache_s: float = 2.0
    queue_cache_s: float = 1.0
    defaults: Mapping[str, RateLimit] = field(default_factory=lambda: dict(DEFAULT_LIMITS))


@dataclass
class _Window:
    #: The total of every replica, as of the last flush.
    known: int = 0
    #: Admitted here since the last flush.
    pending: int = 0


@dataclass
class _Cached:
    value: int
    read_at: datetime
    #: Admitted here since the value was read (the queue only: jobs submitted meanwhile).
    added: int = 0


class RateLimiter:
    def __init__(
        self,
        store: LimitStore,
        workers: WorkerStore,
        clock: Clock,
        settings: LimitSettings | None = None,
        *,
        on_refused: Callable[[str, str], None] | None = None,
        worker_stale_ms: int = 10_000,
    ) -> None:
        self._store = store
        self._workers = workers
        self._clock = clock
        self.settings = settings or LimitSettings()
        self._on_refused = on_refused
        self._worker_stale = timedelta(milliseconds=worker_stale_ms)
        self._windows: dict[WindowKey, _Window] = {}
        self._running_workers: dict[str, _Cached] = {}
        self._queues: dict[str, _Cached] = {}
        self._flush_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def limit_of(self, endpoint: Endpoint, operation: str) -> RateLimit:
        return endpoint.rate_limits.get(operation) or self.settings.defaults[operation]

    async def check(self, endpoint: Endpoint, operation: str) -> None:
        """Counts one call of `operation`, or raises RateLimited when the window's limit is reached."""
        if not self.settings.enabled:
            return
        limit = self.limit_of(endpoint, operation)
        now = self._clock.now()
        start = self._window_start(now)
        key = (endpoint.name, operation, start)
        window = self._windows.setdefault(key, _Window())
        allowed = limit.limit
        if window.known + window.pending >= allowed and limit.per_worker:
            allowed = limit.effective(await self._running(endpoint.name, now))
        if window.known + window.pending >= allowed:
            self._refused(endpoint.name, operation)
            window_end = start + timedelta(seconds=self.settings.window_s)
            raise RateLimited(
                f"rate limit of {operation} on endpoint {endpoint.name!r} reached: {allowed} requests "
                f"per {self.settings.window_s} s",
                retry_after_s=max(1, math.ceil((window_end - now).total_seconds())),
            )
        window.pending += 1
        if window.pending >= max(1, int(allowed * self.settings.flush_share)):
            await self.flush()

    async def admit_job(self, endpoint: Endpoint) -> None:
        """Refuses a new job while the endpoint's queue is over max(50, workersMax x 500)."""
        if not self.settings.enabled or endpoint.workers_max is None:
            return
        cap = max(QUEUE_FLOOR, endpoint.workers_max * QUEUE_PER_WORKER)
        now = self._clock.now()
        cached = self._queues.get(endpoint.name)
        fresh = cached is not None and now - cached.read_at < timedelta(seconds=self.settings.queue_cache_s)
        # The estimate may only err high (jobs that left the queue since): re-read before refusing.
        if cached is None or (not fresh and cached.value + cached.added >= cap):
            cached = _Cached(await self._store.queue_size(endpoint.name), now)
            self._queues[endpoint.name] = cached
        if cached.value + cached.added >= cap:
            self._refused(endpoint.name, "queue")
            raise RateLimited(
                f"the queue of endpoint {endpoint.name!r} is full: {cached.value + cached.added} jobs, "
                f"the limit is {cap} (max({QUEUE_FLOOR}, workersMax {endpoint.workers_max} x "
                f"{QUEUE_PER_WORKER}))",
                retry_after_s=max(1, math.ceil(self.settings.queue_cache_s)),
            )
        cached.added += 1

    def _refused(self, endpoint: str, operation: str) -> None:
        if self._on_refused is not None:
            self._on_refused(endpoint, operation)

    def _window_start(self, now: datetime) -> datetime:
        seconds = self.settings.window_s
        epoch = math.floor(now.timestamp() / seconds) * seconds
        return datetime.fromtimestamp(epoch, UTC)

    async def _running(self, endpoint: str, now: datetime) -> int:
        """Workers connected to the endpoint (idle or busy) on every replica, cached briefly."""
        cached = self._running_workers.get(endpoint)
        if cached is None or now - cached.read_at >= timedelta(seconds=self.settings.workers_cache_s):
            counts = await self._workers.count(endpoint, now - self._worker_stale)
            cached = _Cached(counts.idle + counts.running, now)  # `ready` overlaps both
            self._running_workers[endpoint] = cached
        return cached.value

    async def flush(self) -> None:
        """Adds the unflushed counts to the shared windows and learns the other replicas' counts."""
        async with self._flush_lock:
            current = self._window_start(self._clock.now())
            for key in [k for k in self._windows if k[2] < current]:
                del self._windows[key]  # past windows no longer matter
            batch = [(key, w.pending) for key, w in self._windows.items() if w.pending]
            if not batch:
                return
            try:
                totals = await self._store.add_counts(batch)
            except Exception as error:  # keep judging on local counts; the next flush tries again
                log.warning("could not share rate-limit counts: %s", error)
                return
            for key, sent in batch:
                window = self._windows.get(key)
                if window is not None:
                    window.pending -= sent
                    window.known = totals.get(key, window.known + sent)

    async def start(self) -> None:
        if self.settings.enabled:
            self._task = asyncio.create_task(self._run(), name="jobwire-rate-limits")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self.flush()

    async def _run(self) -> None:
        prune_every = max(1, int(60 / self.settings.flush_interval_s))
        ticks = 0
        while True:
            await asyncio.sleep(self.settings.flush_interval_s)
            await self.flush()
            ticks += 1
            if ticks % prune_every == 0:
                before = self._clock.now() - timedelta(seconds=6 * self.settings.window_s)
                try:
                    await self._store.prune(before)
                except Exception as error:
                    log.warning("could not prune rate-limit windows: %s", error)
