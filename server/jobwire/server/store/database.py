"""The engine, the hot path's raw connections, and the one place where driver errors become domain errors."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy import event, exc
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


def create_engine(url: str, *, pool_size: int = 20) -> AsyncEngine:
    """An async engine on asyncpg.

    No `pool_pre_ping`: with asyncpg it costs three round trips (BEGIN, `;`, ROLLBACK) per checkout.
    Instead a checkout looks at whether asyncpg already saw the server close the socket (a database
    restart closes every session, and asyncpg notices while the connection sits idle in the pool), which
    costs no round trip; a connection that dies later fails its statement, is invalidated, and the
    caller gets Unavailable.

    20 kept connections (10 more at peaks): with 16 concurrent submitters plus the dispatcher, 10 kept
    connections meant opening and closing overflow connections all the time (a TCP and TLS-probe
    handshake and a type introspection each).
    """
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size // 2,
        pool_timeout=10,
        connect_args={"timeout": 5, "server_settings": {"application_name": "jobwire"}},
    )
    event.listen(engine.sync_engine.pool, "checkout", _refuse_closed)
    return engine


def _refuse_closed(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    # DisconnectionError makes the pool throw the connection away and check out (or open) another one.
    if dbapi_connection.driver_connection.is_closed():
        raise exc.DisconnectionError("the server closed this pooled connection")


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
    except (TimeoutError, exc.DBAPIError, exc.TimeoutError, OSError, asyncpg.PostgresError) as error:
        if isinstance(error, exc.TimeoutError) or _is_connection_error(error):
            raise Unavailable("the job store is unavailable; try again") from error
        raise
    except asyncpg.InterfaceError as error:  # asyncpg's own "connection is closed/lost"
        raise Unavailable("the job store is unavailable; try again") from error


@asynccontextmanager
async def transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    async with translate_errors(), engine.begin() as connection:
        yield connection


@asynccontextmanager
async def connection(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection's asyncpg driver, in autocommit: each statement is its own implicit
    transaction, committed (synchronously, as configured) before its reply, so a single-statement store
    call is one round trip. asyncpg prepares each statement once per connection and caches it.

    The engine's pool still owns the connection (same limits, `dispose`, reset). A connection that
    failed is invalidated so the pool opens a fresh one for the next caller."""
    async with translate_errors(), engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver: asyncpg.Connection = raw.driver_connection
        try:
            yield driver
        except BaseException as error:
            if driver.is_closed() or _is_connection_error(error) or isinstance(error, asyncpg.InterfaceError):
                await conn.invalidate()
            elif not isinstance(error, Exception):
                # Cancelled, perhaps mid-statement: the connection's state is unknown, so it is closed
                # (without awaiting, the task is being cancelled); the next checkout replaces it.
                driver.terminate()
            raise


_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


@dataclass(frozen=True)
class Sql:
    """A statement written with `:name` parameters (like SQLAlchemy's `text`), for asyncpg's `$n`."""

    source: str
    names: tuple[str, ...]

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        return [params[name] for name in self.names]


def sql(statement: str) -> Sql:
    """Compiles `:name` placeholders to `$1..$n` (a name used twice is one parameter); `::type` casts
    and everything else stay as written."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return Sql(_PARAM.sub(number, statement), tuple(names))


async def fetch(engine: AsyncEngine, statement: Sql, params: Mapping[str, Any]) -> list[asyncpg.Record]:
    """Runs one statement in its own (implicit) transaction; its rows."""
    async with connection(engine) as conn:
        rows: list[asyncpg.Record] = await conn.fetch(statement.source, *statement.args(params))
        return rows


async def fetch_one(engine: AsyncEngine, statement: Sql, params: Mapping[str, Any]) -> asyncpg.Record | None:
    """Runs one statement in its own (implicit) transaction; its first row, if any. (Not `fetchrow`:
    that stops the portal after one row, and the statement's other rows must still run, e.g. their
    pg_notify.)"""
    rows = await fetch(engine, statement, params)
    return rows[0] if rows else None
