"""What the commands that work on the database share: its URL (given, or the embedded Postgres started on
demand), the admin service on it, and running a command's coroutine with domain errors as exit codes.

The server stack (SQLAlchemy, Alembic, grpc, the app) is imported inside these functions, so that
`--help` and the client commands never load it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from jobwire.server.cli.output import EXIT_FAILED, EXIT_USAGE, err
from jobwire.server.config import Settings
from jobwire.server.errors import JobwireError
from jobwire.server.loop import loop_factory

if TYPE_CHECKING:
    from jobwire.server.service.admin import AdminService

T = TypeVar("T")

DatabaseOption = Annotated[
    str | None, typer.Option("--database-url", envvar="JOBWIRE_DATABASE_URL", help="Postgres URL (asyncpg).")
]


def settings_for(database_url: str | None, **overrides: object) -> Settings:
    """The environment's settings (`JOBWIRE_*`) with the command line's on top."""
    return Settings.from_env().with_overrides(database_url=database_url, **overrides)


@asynccontextmanager
async def database(settings: Settings) -> AsyncIterator[tuple[str, bool]]:
    """The database URL, and whether it is the embedded one (started, or reused when already running)."""
    if settings.database_url:
        yield settings.database_url, False
        return
    from jobwire.server.embedded import EmbeddedPostgres

    embedded = EmbeddedPostgres(settings.data_dir / "postgres")
    await asyncio.to_thread(embedded.start)
    try:
        yield embedded.url, True
    finally:
        # Stop it only if this command started it: a running `jobwire dev` keeps its database.
        if embedded.started_here:
            await asyncio.to_thread(embedded.stop)


@asynccontextmanager
async def admin_service(settings: Settings) -> AsyncIterator[AdminService]:
    """The admin service on a migrated database (the embedded one is migrated here; others are refused)."""
    from jobwire.server.app import ensure_migrated
    from jobwire.server.clock import SystemClock
    from jobwire.server.service.admin import AdminService
    from jobwire.server.store import AdminStore, Database

    async with database(settings) as (url, embedded):
        db = Database(url, pool_size=1)
        try:
            await ensure_migrated(db.engine, url, migrate=embedded)
            yield AdminService(AdminStore(db), SystemClock())
        finally:
            await db.dispose()


def run(work: Callable[[], Awaitable[T]]) -> T:
    """Runs a coroutine on the event loop `jobwire.server.loop` chooses (uvloop where installed); domain
    errors become a message on stderr and exit code 1, an unmigrated database or an unknown
    JOBWIRE_EVENT_LOOP exit code 2."""
    from jobwire.server.app import DatabaseNotMigrated

    try:
        new_loop = loop_factory()
    except (ValueError, ImportError) as error:
        err.print(f"[red]error:[/red] {error}")
        raise typer.Exit(EXIT_USAGE) from None
    try:
        with asyncio.Runner(loop_factory=new_loop) as runner:
            return runner.run(_guard(work))
    except JobwireError as error:
        err.print(f"[red]error:[/red] {error.message}")
        raise typer.Exit(EXIT_FAILED) from None
    except DatabaseNotMigrated as error:
        err.print(f"[red]error:[/red] {error}")
        raise typer.Exit(EXIT_USAGE) from None


async def _guard(work: Callable[[], Awaitable[T]]) -> T:
    return await work()
