"""Wiring: one process, one event loop, a grpc.aio server and an ASGI HTTP server over one set of handlers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket

import grpc
import uvicorn
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.routing import Route, Router

from jobwire.server.api.jobs import SERVICE, JobApi
from jobwire.server.api.openai_routes import OpenAIRoutes
from jobwire.server.api.openapi import openapi_route
from jobwire.server.api.registry import grpc_handler, rpcs_of
from jobwire.server.api.runpod_worker import RunpodWorkerRoutes
from jobwire.server.api.transcoder import Transcoder
from jobwire.server.api.workers import WORKER_SERVICE, WorkerApi
from jobwire.server.clock import Clock, SystemClock
from jobwire.server.config import Settings, split_addr
from jobwire.server.console import console_routes
from jobwire.server.observability import Observability
from jobwire.server.service.admin import AdminService
from jobwire.server.service.auth import Authenticator
from jobwire.server.service.dispatch import Dispatcher, DispatchSettings
from jobwire.server.service.events import CHANNELS, JobEvents
from jobwire.server.service.http_workers import HttpWorkers, HttpWorkerSettings
from jobwire.server.service.jobs import JobService, JobSettings
from jobwire.server.service.limits import LimitSettings, RateLimiter
from jobwire.server.service.webhooks import Pruner, WebhookSender, WebhookSettings
from jobwire.server.store import (
    AdminStore,
    Database,
    JobStore,
    Listener,
    WebhookStore,
    WorkerStore,
    libpq_dsn,
)
from jobwire.server.store.database import JOB_QUEUED
from jobwire.server.store.limits import LimitStore
from jobwire.server.store.listings import ListingStore
from jobwire.server.store.migrate import current_revision, head_revision, upgrade
from jobwire.server.store.stats import StatsStore

log = logging.getLogger("jobwire")

MAX_MESSAGE_BYTES = 32 * 1024 * 1024
GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # Workers and clients send keepalive pings every 20-30 s; allow them without a call in flight.
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_ping_strikes", 3),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
]


class DatabaseNotMigrated(RuntimeError):
    pass


async def ensure_migrated(engine: AsyncEngine, url: str, migrate: bool) -> None:
    """Refuses an unmigrated database with a clear message, or migrates it when asked to."""
    current, head = await current_revision(engine), head_revision()
    if current == head:
        return
    if not migrate:
        raise DatabaseNotMigrated(
            f"the database is at revision {current or '(none)'}, jobwire needs {head}: "
            "run `jobwire migrate` (or start with --migrate)"
        )
    log.info("migrating the database from %s to %s", current or "(empty)", head)
    await asyncio.to_thread(upgrade, url)


def _listening_socket(addr: str) -> socket.socket:
    host, port = split_addr(addr)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio turns Nagle off (TCP_NODELAY) only on sockets whose proto says TCP,
    # and a response written as headers then body would otherwise wait ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class JobwireServer:
    """The whole service. `start()` binds both ports (port 0 picks free ones) and returns."""

    def __init__(
        self,
        settings: Settings,
        database_url: str,
        *,
        clock: Clock | None = None,
        job_settings: JobSettings | None = None,
        dispatch_settings: DispatchSettings | None = None,
        http_worker_settings: HttpWorkerSettings | None = None,
        webhook_settings: WebhookSettings | None = None,
        limit_settings: LimitSettings | None = None,
        observability: Observability | None = None,
    ) -> None:
        self.settings = settings
        self.database_url = database_url
        self.clock = clock or SystemClock()
        self.database = db = Database(database_url)
        store, workers = JobStore(db), WorkerStore(db)
        self.events = JobEvents(ending_here=store.ending_here)
        # Observability (issue 6): this server's metrics registry and tracer (traces only when configured).
        self.observability = obs = observability or Observability.from_env()
        self.admin = AdminService(AdminStore(db), self.clock)
        self.auth = Authenticator(AdminStore(db), self.clock)
        store.on_changed(self.events.on_changed)
        self.jobs = JobService(store, self.events, self.clock, job_settings, workers, ListingStore(db))
        self.dispatcher = Dispatcher(store, workers, self.clock, dispatch_settings, obs.dispatch)
        self.limiter = RateLimiter(
            LimitStore(db),
            workers,
            self.clock,
            limit_settings,
            on_refused=obs.metrics.rate_limited,
            worker_stale_ms=self.jobs.settings.worker_stale_ms,
        )
        self.rpcs = rpcs_of(SERVICE, JobApi(self.jobs, self.auth, self.clock, self.limiter), obs.rpc)
        self.worker_rpcs = rpcs_of(WORKER_SERVICE, WorkerApi(self.dispatcher, self.auth), obs.rpc)
        # Observability: the scrape-time gauges read the job figures from Postgres and the sessions here.
        stats = StatsStore(db)
        obs.watch(lambda: stats.endpoint_stats(self.clock.now()), lambda: self.dispatcher.sessions)
        self.http_workers = HttpWorkers(self.dispatcher, store, http_worker_settings)
        self.webhooks = WebhookSender(
            WebhookStore(db), self.clock, webhook_settings, on_attempt=obs.metrics.webhook_delivered
        )
        self.pruner = Pruner(WebhookStore(db), self.clock)
        self._listener = Listener(
            libpq_dsn(database_url), (*CHANNELS, JOB_QUEUED), self._on_notify, self._on_gap
        )
        self._grpc: grpc.aio.Server | None = None
        self._http: uvicorn.Server | None = None
        self.http_task: asyncio.Task[None] | None = None
        self.grpc_port = 0
        self.http_port = 0
        self.started = asyncio.Event()

    def _on_notify(self, channel: str, payload: str) -> None:
        self.events.on_notify(channel, payload)
        self.dispatcher.on_notify(channel, payload)
        self.webhooks.on_notify(channel, payload)

    def _on_gap(self) -> None:
        self.events.on_gap()
        self.dispatcher.on_gap()

    async def start(self) -> None:
        migrate = self.settings.migrate if self.settings.migrate is not None else False
        await ensure_migrated(self.database.engine, self.database_url, migrate)
        await self._listener.start()
        await self.dispatcher.start()
        await self.webhooks.start()
        await self.pruner.start()
        await self.limiter.start()
        await self._start_grpc()
        await self._start_http()
        self.started.set()
        loop = type(asyncio.get_running_loop()).__module__.partition(".")[0]  # "uvloop" or "asyncio"
        log.info(
            "jobwire serving gRPC on %s and HTTP on %s (event loop: %s)",
            self.grpc_target,
            self.http_url,
            loop,
        )

    async def _start_grpc(self) -> None:
        server = grpc.aio.server(options=GRPC_OPTIONS)
        server.add_generic_rpc_handlers(
            (grpc_handler(SERVICE, self.rpcs), grpc_handler(WORKER_SERVICE, self.worker_rpcs))
        )
        checks = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(checks, server)
        names = (SERVICE.full_name, WORKER_SERVICE.full_name, health.SERVICE_NAME, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server)
        host, port = split_addr(self.settings.grpc_addr)
        self.grpc_port = server.add_insecure_port(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        await server.start()
        for name in ("", SERVICE.full_name, WORKER_SERVICE.full_name):
            await checks.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._grpc = server

    async def _start_http(self) -> None:
        sock = _listening_socket(self.settings.http_addr)
        self.http_port = sock.getsockname()[1]
        # Runpod's worker routes first; everything else is the transcoded client API.
        routes = RunpodWorkerRoutes(self.http_workers, self.auth).routes()
        # OpenAI's clients, relayed through jobs as Runpod's vLLM workers expect.
        routes += OpenAIRoutes(self.jobs, self.auth, self.limiter).routes()
        # Observability: Prometheus' scrape target, unauthenticated as scrapers expect.
        routes.append(Route("/metrics", self.observability.metrics_endpoint, methods=["GET"]))
        # The web console's files at /console/ (the page calls the API above with the user's key).
        routes += console_routes()
        # The transcoder is the default app, not a Mount: a Mount's pattern misses paths with %0A.
        app = Router(routes=[openapi_route(), *routes], default=Transcoder(self.rpcs), redirect_slashes=False)
        config = uvicorn.Config(
            app,
            loop="none",
            lifespan="off",
            access_log=False,
            log_level="warning",
            # Observability: uvicorn's records go to the root logger's handler (JSON with --log-json)
            # instead of a text handler of its own.
            log_config=None,
            timeout_graceful_shutdown=5,
        )
        self._http = uvicorn.Server(config)
        self.http_task = asyncio.create_task(self._http.serve(sockets=[sock]), name="jobwire-http")
        while not self._http.started:
            if self.http_task.done():
                await self.http_task
                raise RuntimeError("the HTTP server stopped during start-up")
            await asyncio.sleep(0.01)

    @property
    def http_url(self) -> str:
        host, _ = split_addr(self.settings.http_addr)
        return f"http://{f'[{host}]' if ':' in host else host}:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        host, _ = split_addr(self.settings.grpc_addr)
        return f"{f'[{host}]' if ':' in host else host}:{self.grpc_port}"

    async def stop(self, grace: float = 5.0) -> None:
        """Stops taking new HTTP work first, then lets gRPC calls finish within `grace`."""
        if self._http is not None and self.http_task is not None:
            self._http.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await self.http_task
        if self._grpc is not None:
            await self._grpc.stop(grace)
        await self.dispatcher.stop()
        await self.webhooks.stop()
        await self.pruner.stop()
        await self.limiter.stop()
        await self._listener.stop()
        await self.database.dispose()
        self.observability.shutdown()  # flushes pending spans

    async def wait_closed(self) -> None:
        if self._grpc is not None:
            await self._grpc.wait_for_termination()


async def serve_until_signalled(server: JobwireServer) -> None:
    """Runs until SIGINT/SIGTERM, then shuts down gracefully.

    uvicorn captures the signals while it serves and re-raises them when it stops; the handlers set
    here are the ones it restores, so the re-raised signal lands in `stop` instead of killing the
    process before gRPC calls have finished.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))
    await server.start()
    stopping = asyncio.ensure_future(stop.wait())
    assert server.http_task is not None
    await asyncio.wait([stopping, server.http_task], return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    log.info("shutting down")
    await server.stop()
