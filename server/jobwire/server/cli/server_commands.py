"""`jobwire serve`, `dev`, `worker` and `migrate`: the commands that run jobwire or change its schema."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Annotated

import typer

from jobwire.server.cli.database import DatabaseOption, database, run, settings_for
from jobwire.server.cli.output import out
from jobwire.server.config import Settings
from jobwire.server.model import Role

HttpAddr = Annotated[
    str, typer.Option("--http-addr", envvar="JOBWIRE_HTTP_ADDR", help="HTTP listen address.")
]
GrpcAddr = Annotated[
    str, typer.Option("--grpc-addr", envvar="JOBWIRE_GRPC_ADDR", help="gRPC listen address.")
]
LogJson = Annotated[
    bool,
    typer.Option(
        "--log-json",
        envvar="JOBWIRE_LOG_JSON",
        help="Log one JSON object per line (with request and job ids).",
    ),
]
LogLevel = Annotated[
    str | None,
    typer.Option(
        "--log-level", envvar="JOBWIRE_LOG_LEVEL", help="debug, info, warning or error.", show_default="info"
    ),
]


def serve(
    http_addr: HttpAddr = Settings.http_addr,
    grpc_addr: GrpcAddr = Settings.grpc_addr,
    database_url: DatabaseOption = None,
    migrate: Annotated[
        bool | None, typer.Option("--migrate/--no-migrate", help="Migrate the database first.")
    ] = None,
    log_json: LogJson = False,
    log_level: LogLevel = None,
) -> None:
    """Serve the gRPC API, the /v2 REST facade and /metrics (embedded Postgres unless --database-url).

    Traces are exported when OTEL_EXPORTER_OTLP_ENDPOINT is set (or JOBWIRE_OTEL=console).
    """
    settings = settings_for(
        database_url, http_addr=http_addr, grpc_addr=grpc_addr, migrate=migrate, log_level=log_level
    )
    _configure_logging(settings, log_json)
    from jobwire.server.app import JobwireServer, serve_until_signalled

    async def work() -> None:
        async with database(settings) as (url, embedded):
            wanted = settings.migrate if settings.migrate is not None else embedded
            server = JobwireServer(settings.with_overrides(migrate=wanted), url)
            await serve_until_signalled(server)

    run(work)


def dev(
    http_addr: HttpAddr = Settings.http_addr,
    grpc_addr: GrpcAddr = Settings.grpc_addr,
    endpoint: Annotated[str, typer.Option(help="The endpoint to create and print a key for.")] = "dev",
    log_json: LogJson = False,
    log_level: LogLevel = None,
) -> None:
    """Start jobwire on an embedded Postgres with a ready endpoint and an example worker; print a key."""
    settings = settings_for(None, http_addr=http_addr, grpc_addr=grpc_addr, migrate=True, log_level=log_level)
    _configure_logging(settings, log_json)
    from jobwire.server.app import JobwireServer, ensure_migrated, serve_until_signalled
    from jobwire.worker import Worker
    from jobwire.worker.examples import echo

    async def work() -> None:
        async with database(settings) as (url, _):
            server = JobwireServer(settings, url)
            await ensure_migrated(server.database.engine, url, migrate=True)
            await server.admin.ensure_endpoint(endpoint)
            created = await server.admin.create_key(Role.CLIENT, endpoint)
            worker_key = await server.admin.create_key(Role.WORKER, endpoint)

            async def announce() -> None:
                await server.started.wait()
                out.print(f"jobwire dev is running (data in {settings.data_dir})")
                out.print(f"  REST  {server.http_url}/v2/{endpoint}/run")
                out.print(f"  gRPC  {server.grpc_target}  (jobwire.v1.JobService)")
                out.print(f"  key   {created.secret}")
                out.print(f"  worker  jobwire.worker.examples:echo is serving {endpoint}")
                # One line even when stdout is not a terminal (Rich wraps at 80 columns there): it is
                # copied and pasted whole.
                out.print(
                    f"try:  curl -s -H 'Authorization: Bearer {created.secret}' "
                    f'-d \'{{"input": {{"hello": "world"}}}}\' {server.http_url}/v2/{endpoint}/run',
                    soft_wrap=True,
                )

            async def example_worker() -> None:
                await server.started.wait()
                example = Worker(echo, endpoint=endpoint, key=worker_key.secret, server=server.grpc_target)
                await example.run()

            tasks = [asyncio.create_task(announce()), asyncio.create_task(example_worker())]
            try:
                await serve_until_signalled(server)
            finally:
                for task in tasks:
                    task.cancel()

    run(work)


def worker(context: typer.Context) -> None:
    """Run a worker: MODULE:FUNCTION --endpoint NAME --server HOST:PORT --key KEY [--concurrency N]."""
    from jobwire.worker.__main__ import main as worker_main

    # The worker SDK parses its own arguments (it runs without the server extra too).
    raise typer.Exit(worker_main(context.args, prog="jobwire worker"))


def migrate(database_url: DatabaseOption = None) -> None:
    """Upgrade the database to the newest schema."""
    from jobwire.server.store.migrate import upgrade

    settings = settings_for(database_url)

    async def work() -> str:
        async with database(settings) as (url, _):
            await asyncio.to_thread(upgrade, url)
            return url

    run(work)
    out.print("database is at the newest revision")


def _configure_logging(settings: Settings, log_json: bool) -> None:
    """Text lines on stderr, or one JSON object per line with --log-json / JOBWIRE_LOG_JSON=1."""
    # gRPC's C core writes its own lines to stderr (INFO ones at shutdown, after a fork), outside Python's
    # logging; only its errors are worth a line. Read when grpc is first imported, which is after this.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    from jobwire.server.observability import configure_logging

    configure_logging(settings.log_level, json_lines=log_json or settings.log_json, stream=sys.stderr)
