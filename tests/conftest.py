"""Database fixtures: one Postgres per session, one migrated template, one fresh clone per test.

Isolation strategy. Running Alembic for every test would cost seconds; sharing one database would
let tests see each other's rows. So the schema is built once per session, by the real migrations,
into a template database (`jobwire_template`), and every test that asks for `database_url` gets its
own database cloned from it with `CREATE DATABASE ... TEMPLATE` (a copy of its files: about 15 ms),
dropped after the test with `DROP DATABASE ... WITH (FORCE)`, which also cuts connections a test
left open. Tests can therefore commit, run concurrent transactions and use LISTEN/NOTIFY exactly as
the service does, with no rollback tricks. Migration tests use `empty_database_url` instead.

The server is an embedded Postgres in a temporary directory, with fsync off (test data is
throw-away), unless JOBWIRE_TEST_DATABASE_URL names a server to use instead: a SQLAlchemy asyncpg
URL (`postgresql+asyncpg://user:password@host:port/postgres`) whose user may CREATE DATABASE.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg  # type: ignore[import-untyped,unused-ignore]
import pytest
from sqlalchemy.engine import URL, make_url

from jobwire.server.embedded import EmbeddedPostgres, fast_unsafe_settings

TEMPLATE_DB = "jobwire_template"


def _with_database(url: str, database: str) -> URL:
    return make_url(url).set(database=database)


def _sqlalchemy_url(url: str, database: str) -> str:
    return _with_database(url, database).render_as_string(hide_password=False)


def _libpq_dsn(url: str, database: str) -> str:
    """The same server as a libpq URL, which asyncpg.connect accepts."""
    return _with_database(url, database).set(drivername="postgresql").render_as_string(hide_password=False)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _admin(url: str, *statements: str) -> None:
    """Runs statements outside a transaction (CREATE/DROP DATABASE need that) on the maintenance db."""
    connection = await asyncpg.connect(_libpq_dsn(url, make_url(url).database or "postgres"))
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A SQLAlchemy asyncpg URL to the session's server (its `postgres` database), on 127.0.0.1.

    The data directory is not under pytest's tmp root: another pytest process on the machine resets that
    root's permissions, which locks out Postgres's own (non-root) user mid-run.
    """
    external = os.environ.get("JOBWIRE_TEST_DATABASE_URL")
    if external:
        yield external
        return
    root = Path(tempfile.mkdtemp(prefix="jobwire-test-pg-"))
    server = EmbeddedPostgres(root / "data", settings=fast_unsafe_settings())
    server.start()
    try:
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
async def template_database(pg_url: str) -> AsyncIterator[str]:
    """The name of a database migrated to head, built once per session; tests clone it."""
    from jobwire.server.store.migrate import upgrade  # lazily: only tests that need a database pay

    # Per xdist worker when sharing an external server, so that sessions do not drop each other's.
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    name = f"{TEMPLATE_DB}_{worker}" if worker else TEMPLATE_DB
    drop = (
        f"ALTER DATABASE {_ident(name)} WITH IS_TEMPLATE false",
        f"DROP DATABASE IF EXISTS {_ident(name)} WITH (FORCE)",
    )
    if await _database_exists(pg_url, name):  # left over by a session that did not finish
        await _admin(pg_url, *drop)
    await _admin(pg_url, f"CREATE DATABASE {_ident(name)} TEMPLATE template0")
    try:
        # Alembic's env.py runs its own event loop: it must run off this one.
        await asyncio.to_thread(upgrade, _sqlalchemy_url(pg_url, name))
        # No connections from now on: CREATE DATABASE ... TEMPLATE fails while the template has any.
        await _admin(
            pg_url,
            f"ALTER DATABASE {_ident(name)} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false",
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'",
        )
        yield name
    finally:
        await _admin(pg_url, *drop)


async def _database_exists(url: str, name: str) -> bool:
    connection = await asyncpg.connect(_libpq_dsn(url, make_url(url).database or "postgres"))
    try:
        return bool(await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def _fresh_database(pg_url: str, template: str) -> AsyncIterator[str]:
    name = f"test_{uuid.uuid4().hex}"
    await _admin(pg_url, f"CREATE DATABASE {_ident(name)} TEMPLATE {_ident(template)}")
    try:
        yield _sqlalchemy_url(pg_url, name)
    finally:
        await _admin(pg_url, f"DROP DATABASE IF EXISTS {_ident(name)} WITH (FORCE)")


@pytest.fixture
async def database_url(pg_url: str, template_database: str) -> AsyncIterator[str]:
    """A SQLAlchemy asyncpg URL to a database of this test's own, migrated to head; dropped afterwards."""
    async with _fresh_database(pg_url, template_database) as url:
        yield url


@pytest.fixture
async def empty_database_url(pg_url: str) -> AsyncIterator[str]:
    """A SQLAlchemy asyncpg URL to an empty database of this test's own (no migrations applied)."""
    async with _fresh_database(pg_url, "template0") as url:
        yield url


# The running-service fixtures (`jobwire`), shared by e2e and compat tests.
pytest_plugins = ["server_fixtures"]
