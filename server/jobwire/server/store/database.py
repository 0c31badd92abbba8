"""The engine, and the one place where driver errors become domain errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from jobwire.server.errors import Unavailable

#: Channel on which every ended job's id is announced (waiters of runsync/status-sync wake on it).
JOB_ENDED = "jobwire_job_ended"
#: Channel on which a job's new stream chunks are announced (payload: the job id).
JOB_CHUNKS = "jobwire_job_chunks"
#: Channel on which an endpoint with newly queued jobs is announced (payload: the endpoint); dispatchers
#: of every replica wake on it.
JOB_QUEUED = "jobwire_job_queued"
#: Channel on which a purge of an endpoint's queue is announced (payload: the endpoint).
QUEUE_PURGED = "jobwire_queue_purged"


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    """An async engine on asyncpg. pre-ping finds connections a database restart left dead, so the
    first request after a restart succeeds instead of failing on a stale connection."""
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_timeout=10,
        connect_args={"timeout": 5, "server_settings": {"application_name": "jobwire"}},
    )


def libpq_dsn(url: str) -> str:
    """The URL as a plain `postgresql://` DSN, for asyncpg's own connections (LISTEN) and tools."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _is_connection_error(error: BaseException) -> bool:
    if isinstance(error, exc.DBAPIError):
        return (
            bool(error.connection_invalidated)
            or isinstance(error, exc.InterfaceError)
            or (_is_connection_error(error.orig) if error.orig is not None else False)
        )
    name = type(error).__name__
    return isinstance(error, OSError | asyncio.TimeoutError | ConnectionError) or name in {
        "ConnectionDoesNotExistError",
        "CannotConnectNowError",
        "InterfaceError",
        "ConnectionFailureError",
        "AdminShutdownError",
        "TooManyConnectionsError",
    }


@asynccontextmanager
async def translate_errors() -> AsyncIterator[None]:
    """Turns 'the database is not there' into Unavailable (gRPC UNAVAILABLE, HTTP 503)."""
    try:
        yield
    except (TimeoutError, exc.DBAPIError, exc.TimeoutError, OSError) as error:
        if isinstance(error, exc.TimeoutError) or _is_connection_error(error):
            raise Unavailable("the job store is unavailable; try again") from error
        raise


@asynccontextmanager
async def transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    async with translate_errors(), engine.begin() as connection:
        yield connection
