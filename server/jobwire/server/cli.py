"""The `jobwire` command: serve, dev, migrate, and endpoint and key management."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import timedelta
from typing import Annotated, TypeVar

import typer
from rich.console import Console

from jobwire.server.app import DatabaseNotMigrated, JobwireServer, ensure_migrated, serve_until_signalled
from jobwire.server.clock import SystemClock
from jobwire.server.config import Settings
from jobwire.server.embedded import EmbeddedPostgres
from jobwire.server.errors import JobwireError
from jobwire.server.model import Role
from jobwire.server.service.admin import AdminService
from jobwire.server.store import AdminStore, create_engine
from jobwire.server.store.migrate import upgrade
from jobwire.worker import Worker
from jobwire.worker.examples import echo

app = typer.Typer(help="jobwire: a self-hosted job service with Runpod's queue API.", no_args_is_help=True)
endpoint_app = typer.Typer(help="Manage endpoints.", no_args_is_help=True)
key_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
app.add_typer(endpoint_app, name="endpoint")
app.add_typer(key_app, name="key")
out = Console()
err = Console(stderr=True)
T = TypeVar("T")

DatabaseOption = Annotated[
    str | None, typer.Option("--database-url", envvar="JOBWIRE_DATABASE_URL", help="Postgres URL (asyncpg).")
]
HttpAddr = Annotated[
    str, typer.Option("--http-addr", envvar="JOBWIRE_HTTP_ADDR", help="HTTP listen address.")
]
GrpcAddr = Annotated[
    str, typer.Option("--grpc-addr", envvar="JOBWIRE_GRPC_ADDR", help="gRPC listen address.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _settings(database_url: str | None, **overrides: object) -> Settings:
    return Settings.from_env().with_overrides(database_url=database_url, **overrides)


@asynccontextmanager
async def _database(settings: Settings) -> AsyncIterator[tuple[str, bool]]:
    """The database URL, and whether it is the embedded one (started, or reused when already running)."""
    if settings.database_url:
        yield settings.database_url, False
        return
    embedded = EmbeddedPostgres(settings.data_dir / "postgres")
    await asyncio.to_thread(embedded.start)
    try:
        yield embedded.url, True
    finally:
        # Stop it only if this command started it: a running `jobwire dev` keeps its database.
        if embedded.started_here:
            await asyncio.to_thread(embedded.stop)


def _run(work: Callable[[], Awaitable[T]]) -> T:
    """Runs a coroutine; domain errors become a message on stderr and exit code 1."""
    try:
        return asyncio.run(_guard(work))
    except JobwireError as error:
        err.print(f"[red]error:[/red] {error.message}")
        raise typer.Exit(1) from None
    except DatabaseNotMigrated as error:
        err.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None


async def _guard(work: Callable[[], Awaitable[T]]) -> T:
    return await work()


@asynccontextmanager
async def _admin(settings: Settings) -> AsyncIterator[AdminService]:
    async with _database(settings) as (url, embedded):
        engine = create_engine(url, pool_size=1)
        try:
            await ensure_migrated(engine, url, migrate=embedded)
            yield AdminService(AdminStore(engine), SystemClock())
        finally:
            await engine.dispose()


@app.command()
def serve(
    http_addr: HttpAddr = Settings.http_addr,
    grpc_addr: GrpcAddr = Settings.grpc_addr,
    database_url: DatabaseOption = None,
    migrate: Annotated[
        bool | None, typer.Option("--migrate/--no-migrate", help="Migrate the database first.")
    ] = None,
) -> None:
    """Serve the gRPC API and the /v2 REST facade (embedded Postgres unless --database-url is given)."""
    settings = _settings(database_url, http_addr=http_addr, grpc_addr=grpc_addr, migrate=migrate)
    _configure_logging(settings)

    async def work() -> None:
        async with _database(settings) as (url, embedded):
            wanted = settings.migrate if settings.migrate is not None else embedded
            server = JobwireServer(settings.with_overrides(migrate=wanted), url)
            await serve_until_signalled(server)

    _run(work)


@app.command()
def dev(
    http_addr: HttpAddr = Settings.http_addr,
    grpc_addr: GrpcAddr = Settings.grpc_addr,
    endpoint: Annotated[str, typer.Option(help="The endpoint to create and print a key for.")] = "dev",
) -> None:
    """Start jobwire on an embedded Postgres with a ready endpoint, and print a client key."""
    settings = _settings(None, http_addr=http_addr, grpc_addr=grpc_addr, migrate=True)
    _configure_logging(settings)

    async def work() -> None:
        async with _database(settings) as (url, _):
            server = JobwireServer(settings, url)
            await ensure_migrated(server.engine, url, migrate=True)
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
                out.print(
                    f"try:  curl -s -H 'Authorization: Bearer {created.secret}' "
                    f'-d \'{{"input": {{"hello": "world"}}}}\' {server.http_url}/v2/{endpoint}/run'
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

    _run(work)


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def worker(context: typer.Context) -> None:
    """Run a worker: MODULE:FUNCTION --endpoint NAME --server HOST:PORT --key KEY [--concurrency N]."""
    from jobwire.worker.__main__ import main as worker_main

    raise typer.Exit(worker_main(context.args, prog="jobwire worker"))


@app.command()
def migrate(database_url: DatabaseOption = None) -> None:
    """Upgrade the database to the newest schema."""
    settings = _settings(database_url)

    async def work() -> str:
        async with _database(settings) as (url, _):
            await asyncio.to_thread(upgrade, url)
            return url

    _run(work)
    out.print("database is at the newest revision")


@endpoint_app.command("create")
def endpoint_create(
    name: str,
    execution_timeout_ms: Annotated[int, typer.Option(help="Default execution timeout.")] = 600_000,
    max_attempts: Annotated[int, typer.Option(help="Attempts before a job is FAILED.")] = 3,
    database_url: DatabaseOption = None,
) -> None:
    """Create an endpoint."""

    async def work() -> None:
        async with _admin(_settings(database_url)) as admin:
            await admin.create_endpoint(name, execution_timeout_ms, max_attempts)

    _run(work)
    out.print(f"created endpoint {name}")


@endpoint_app.command("list")
def endpoint_list(database_url: DatabaseOption = None, as_json: JsonOption = False) -> None:
    """List endpoints."""

    async def work() -> list[dict[str, object]]:
        async with _admin(_settings(database_url)) as admin:
            return [asdict(e) for e in await admin.list_endpoints()]

    rows = _run(work)
    if as_json:
        out.print_json(json.dumps(rows, default=str))
    else:
        for row in rows:
            out.print(
                f"{row['name']}\ttimeout={row['execution_timeout_ms']}ms\tattempts={row['max_attempts']}"
            )


@endpoint_app.command("delete")
def endpoint_delete(name: str, database_url: DatabaseOption = None) -> None:
    """Delete an endpoint with its jobs and keys."""

    async def work() -> None:
        async with _admin(_settings(database_url)) as admin:
            await admin.delete_endpoint(name)

    _run(work)
    out.print(f"deleted endpoint {name}")


@key_app.command("create")
def key_create(
    role: Annotated[Role, typer.Option(help="client, worker or admin.")],
    endpoint: Annotated[str | None, typer.Option(help="The endpoint (optional for admin keys).")] = None,
    expires_in_days: Annotated[
        float | None, typer.Option(help="Expire the key after this many days.")
    ] = None,
    database_url: DatabaseOption = None,
) -> None:
    """Create an API key and print it (it is shown only this once)."""
    expires = timedelta(days=expires_in_days) if expires_in_days is not None else None

    async def work() -> str:
        async with _admin(_settings(database_url)) as admin:
            return (await admin.create_key(role, endpoint, expires)).secret

    secret = _run(work)
    # The bare key on stdout, so scripts can capture it: KEY=$(jobwire key create ...).
    print(secret)


@key_app.command("list")
def key_list(
    endpoint: Annotated[str | None, typer.Option(help="Only this endpoint's keys.")] = None,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """List keys (their prefixes only)."""

    async def work() -> list[dict[str, object]]:
        async with _admin(_settings(database_url)) as admin:
            return [asdict(k) for k in await admin.list_keys(endpoint)]

    rows = _run(work)
    if as_json:
        out.print_json(json.dumps(rows, default=str))
    else:
        for row in rows:
            state = "revoked" if row["revoked_at"] else "live"
            out.print(f"{row['prefix']}…\t{row['role']}\t{row['endpoint'] or '*'}\t{state}")


@key_app.command("revoke")
def key_revoke(prefix: str, database_url: DatabaseOption = None) -> None:
    """Revoke the key(s) with this prefix."""

    async def work() -> None:
        async with _admin(_settings(database_url)) as admin:
            await admin.revoke_key(prefix)

    _run(work)
    out.print(f"revoked {prefix}")


def _configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
