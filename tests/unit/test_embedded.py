"""The embedded Postgres: TCP on loopback only, reuse of a running server, clean stop, clear errors."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import asyncpg  # type: ignore[import-untyped,unused-ignore]
import pytest

from jobwire.server.embedded import (
    EmbeddedPostgres,
    EmbeddedPostgresError,
    default_data_dir,
    fast_unsafe_settings,
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    pg = EmbeddedPostgres(tmp_path / "data", settings=fast_unsafe_settings())
    pg.start()
    try:
        yield pg
    finally:
        pg.stop()


async def test_serves_sql_over_loopback_tcp_only(server: EmbeddedPostgres) -> None:
    assert server.url == f"postgresql+asyncpg://postgres@127.0.0.1:{server.port}/postgres"
    assert server.dsn == f"postgresql://postgres@127.0.0.1:{server.port}/postgres"
    connection = await asyncpg.connect(server.dsn)
    try:
        assert await connection.fetchval("SELECT 1") == 1
        assert await connection.fetchval("SHOW listen_addresses") == "127.0.0.1"
        assert str(await connection.fetchval("SELECT inet_server_addr()")) == "127.0.0.1"
        assert await connection.fetchval("SHOW fsync") == "off"
    finally:
        await connection.close()
    assert (server.data_dir / "postgres.log").exists()


def test_second_start_reuses_the_running_server(server: EmbeddedPostgres) -> None:
    again = EmbeddedPostgres(server.data_dir)
    again.start()
    assert (again.port, again.pid) == (server.port, server.pid)
    assert server.started_here
    assert not again.started_here
    with again:  # leaving the block must not stop a server this object did not start
        pass
    assert server.is_running()


async def test_stop_closes_the_port_and_a_restart_keeps_it(server: EmbeddedPostgres) -> None:
    port, pid = server.port, server.pid
    server.stop()
    assert not server.is_running()
    assert server.pid is None
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    with pytest.raises(OSError, match=r"refused|Connect call failed"):
        await asyncpg.connect(server.dsn, timeout=5)
    server.stop()  # a no-op on a stopped server

    restarted = EmbeddedPostgres(server.data_dir, settings=fast_unsafe_settings())
    restarted.start()  # the port is remembered in the data directory
    assert restarted.port == port
    assert restarted.pid != pid
    assert restarted.started_here


def test_a_failed_start_reports_the_end_of_the_log(tmp_path: Path) -> None:
    pg = EmbeddedPostgres(tmp_path / "data", settings={"shared_buffers": "plenty", **fast_unsafe_settings()})
    with pytest.raises(EmbeddedPostgresError, match="did not start") as caught:
        pg.start()
    message = str(caught.value)
    assert "Last lines of" in message
    assert 'invalid value for parameter "shared_buffers": "plenty"' in message
    assert not pg.is_running()


def test_the_settings_it_manages_cannot_be_overridden(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="listen_addresses is managed"):
        EmbeddedPostgres(tmp_path, settings={"listen_addresses": "*"})
    with pytest.raises(ValueError, match="not a Postgres setting name"):
        EmbeddedPostgres(tmp_path, settings={"fsync = off\nport": "1"})


def test_default_data_dir_honours_jobwire_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("JOBWIRE_DATA_DIR", str(tmp_path))
    assert default_data_dir() == tmp_path / "postgres"
    monkeypatch.delenv("JOBWIRE_DATA_DIR")
    assert default_data_dir().name == "postgres"
    assert "jobwire" in default_data_dir().parts
