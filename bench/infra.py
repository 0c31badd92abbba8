"""What a run stands on: one Postgres for every system, Redis for Celery, a jobwire server process per
scenario, a fresh database per scenario, and the versions of everything."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped,unused-ignore]

from bench.common import ROOT, free_port, wait_port

PEERS_PYTHON = ROOT / "bench" / "peers" / ".venv" / "bin" / "python"

#: Durable, and the same for every system: commits wait for the WAL flush (fsync on). Memory settings are
#: what an operator of a 24 GB machine would set; they favour no system.
DURABLE_SETTINGS = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "max_connections": "300",
    "shared_buffers": "1GB",
    "max_wal_size": "8GB",
    "checkpoint_timeout": "30min",
}


@dataclass
class Postgres:
    """The run's Postgres: the embedded one (started here, in a temporary directory), or
    $JOBWIRE_DATABASE_URL."""

    url: str  # SQLAlchemy asyncpg URL, to the maintenance database
    bin_dir: Path | None
    embedded: Any = None
    tmp: Path | None = None

    @classmethod
    def start(cls, mode: str, statements: bool = False) -> Postgres:
        external = os.environ.get("JOBWIRE_DATABASE_URL")
        if external:
            return cls(external, _system_pg_bin())
        from jobwire.server.embedded import EmbeddedPostgres

        tmp = Path(tempfile.mkdtemp(prefix="jobwire-bench-pg-"))
        settings = dict(DURABLE_SETTINGS)
        if mode == "unsafe":
            settings.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        if statements:  # `--pg-statements`; the extension only counts, it changes no plan
            settings.update(shared_preload_libraries="pg_stat_statements")
        server = EmbeddedPostgres(tmp / "data", settings=settings)
        server.start()
        return cls(server.url, server.bin_dir, server, tmp)

    def stop(self) -> None:
        if self.embedded is not None:
            self.embedded.stop()
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def url_for(self, database: str) -> str:
        from sqlalchemy.engine import make_url

        return make_url(self.url).set(database=database).render_as_string(hide_password=False)

    def dsn_for(self, database: str) -> str:
        from sqlalchemy.engine import make_url

        url = make_url(self.url).set(database=database, drivername="postgresql")
        return url.render_as_string(hide_password=False)

    @property
    def admin_dsn(self) -> str:
        from sqlalchemy.engine import make_url

        return self.dsn_for(make_url(self.url).database or "postgres")

    async def execute(self, *statements: str, database: str | None = None) -> None:
        conn = await asyncpg.connect(self.dsn_for(database) if database else self.admin_dsn)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    async def fetch(self, query: str, database: str | None = None) -> list[Any]:
        conn = await asyncpg.connect(self.dsn_for(database) if database else self.admin_dsn)
        try:
            return list(await conn.fetch(query))
        finally:
            await conn.close()

    async def fetchval(self, query: str, database: str | None = None) -> Any:
        return (await self.fetch(query, database))[0][0]

    async def create_database(self, name: str, template: str | None = None) -> None:
        await self.drop_database(name)
        suffix = f' TEMPLATE "{template}"' if template else ""
        await self.execute(f'CREATE DATABASE "{name}"{suffix}')

    async def drop_database(self, name: str) -> None:
        await self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    async def settings(self) -> dict[str, str]:
        names = ["server_version", "fsync", "synchronous_commit", "full_page_writes", "shared_buffers"]
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            return {n: str(await conn.fetchval(f"SHOW {n}")) for n in names}
        finally:
            await conn.close()


def _system_pg_bin() -> Path | None:
    found = shutil.which("pgbench")
    return Path(found).parent if found else None


@dataclass
class Redis:
    """redis-server on a loopback port, AOF on; `fsync` is appendfsync (always: every write is on disk
    before the reply, as Postgres's synchronous commit)."""

    port: int
    proc: subprocess.Popen[bytes]
    dir: Path

    @classmethod
    def start(cls, fsync: str, log_dir: Path) -> Redis:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (scripts/bench installs Debian's redis-server)")
        port = free_port()
        data = Path(tempfile.mkdtemp(prefix="jobwire-bench-redis-"))
        log_dir.mkdir(parents=True, exist_ok=True)
        args = [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data),
            "--save",
            "",
            "--appendonly",
            "yes" if fsync != "off" else "no",
            "--appendfsync",
            fsync if fsync != "off" else "no",
            "--protected-mode",
            "yes",
            "--logfile",
            str(log_dir / "redis.log"),
        ]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wait_port(port)
        return cls(port, proc, data)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        if self.proc.poll() is None:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def version(self) -> str:
        binary = shutil.which("redis-server") or "redis-server"
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout
        return out.split("v=", 1)[1].split()[0] if "v=" in out else out.strip()


# --- jobwire ------------------------------------------------------------------------------------------

JOBWIRE_CLI = [sys.executable, "-m", "jobwire.server"]


def jobwire_cli(*args: str, database_url: str) -> str:
    result = subprocess.run(
        [*JOBWIRE_CLI, *args, "--database-url", database_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if result.returncode != 0:
        raise RuntimeError(f"jobwire {' '.join(args)} failed: {result.stderr.strip()[-2000:]}")
    return result.stdout.strip()


@dataclass
class JobwireServer:
    """`python -m jobwire.server serve` as its own process, on a database of its own."""

    proc: subprocess.Popen[bytes]
    grpc: str
    http: str
    endpoint: str
    client_key: str
    worker_key: str

    @classmethod
    def start(cls, database_url: str, log_path: Path, endpoint: str = "bench") -> JobwireServer:
        # Runpod's default limits (run: 1,000 per 10 s) would cap the throughput being measured; the
        # limiter still counts every call, at limits no figure here reaches.
        limits = [f"--rate-limit={op}=10000000" for op in ("run", "runsync", "status", "cancel")]
        jobwire_cli("endpoint", "create", endpoint, *limits, database_url=database_url)
        client_key = jobwire_cli(
            "key", "create", "--role", "client", "--endpoint", endpoint, database_url=database_url
        )
        worker_key = jobwire_cli(
            "key", "create", "--role", "worker", "--endpoint", endpoint, database_url=database_url
        )
        grpc_port, http_port = free_port(), free_port()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "JOBWIRE_LOG_LEVEL": "warning"}
        args = [
            *JOBWIRE_CLI,
            "serve",
            "--database-url",
            database_url,
            "--http-addr",
            f"127.0.0.1:{http_port}",
            "--grpc-addr",
            f"127.0.0.1:{grpc_port}",
            "--no-migrate",
        ]
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_port(http_port, timeout=60)
            wait_port(grpc_port, timeout=10)
        except TimeoutError:
            proc.kill()
            raise RuntimeError(f"jobwire did not start; see {log_path}") from None
        return cls(
            proc,
            f"127.0.0.1:{grpc_port}",
            f"127.0.0.1:{http_port}",
            endpoint,
            client_key.splitlines()[-1],
            worker_key.splitlines()[-1],
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"the jobwire server exited with {self.proc.returncode}")


# --- versions ----------------------------------------------------------------------------------------


def _run_text(args: list[str]) -> str:
    try:
        return subprocess.run(
            args, cwd=ROOT, capture_output=True, text=True, check=False, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def versions(pg: Postgres, pg_settings: dict[str, str], redis: Redis | None) -> dict[str, Any]:
    peers = ["celery", "kombu", "redis", "procrastinate", "psycopg"]
    peer_versions: dict[str, str] = {}
    if PEERS_PYTHON.exists():
        code = (
            f"import importlib.metadata as m, json\nprint(json.dumps({{n: m.version(n) for n in {peers!r}}}))"
        )
        text = _run_text([str(PEERS_PYTHON), "-c", code])
        with contextlib.suppress(ValueError):
            import json

            peer_versions = json.loads(text)
    import importlib.metadata as metadata

    ours = {
        n: metadata.version(n) for n in ["jobwire", "grpcio", "sqlalchemy", "asyncpg", "uvicorn", "protobuf"]
    }
    commit = _run_text(["git", "rev-parse", "--short", "HEAD"])
    sources = ["server", "worker", "client", "gen", "migrations"]
    dirty = _run_text(["git", "status", "--porcelain", "--", *sources])
    pgbench = str(pg.bin_dir / "pgbench") if pg.bin_dir else "pgbench"
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "jobwire_commit": commit + ("+dirty" if dirty else ""),
        "jobwire_uncommitted": dirty.splitlines(),
        "postgres": pg_settings,
        "pgbench": _run_text([pgbench, "--version"]),
        "redis": redis.version() if redis else None,
        "packages": {**ours, **peer_versions},
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


@contextlib.contextmanager
def timer() -> Iterator[list[float]]:
    box: list[float] = []
    start = time.monotonic()
    try:
        yield box
    finally:
        box.append(time.monotonic() - start)


def run_async(coro: Any) -> Any:
    return asyncio.run(coro)
