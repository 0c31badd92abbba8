"""Helpers shared by the orchestrator and every system's client: standard library only, because this
module is imported both from the project's .venv (jobwire) and from bench/peers/.venv (the peers).

Clocks: every timestamp that crosses a process boundary is `time.monotonic_ns()`. On Linux that is
CLOCK_MONOTONIC, one clock for the whole machine, so a handler's start in a worker process and a
submit in a client process are comparable.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parent.parent
PROBE_ENV = "BENCH_PROBE"


def now_ns() -> int:
    return time.monotonic_ns()


def ms(ns: float) -> float:
    return ns / 1e6


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear interpolation between closest ranks."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))


def latency_summary(prefix: str, values_ms: Sequence[float]) -> dict[str, float]:
    """`{prefix}_p50_ms`, p95, p99 and the mean of a list of milliseconds."""
    return {
        f"{prefix}_p50_ms": round(percentile(values_ms, 50), 3),
        f"{prefix}_p95_ms": round(percentile(values_ms, 95), 3),
        f"{prefix}_p99_ms": round(percentile(values_ms, 99), 3),
        f"{prefix}_mean_ms": round(statistics.fmean(values_ms), 3),
    }


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 30.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s") from None
            time.sleep(0.05)


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


# --- CPU accounting: where a scenario's CPU time goes ------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds used so far: by the whole machine (every core's busy time), by every Postgres process,
    and by one named process (the jobwire server; 0 when none)."""

    machine: float
    postgres: float
    server: float

    @classmethod
    def take(cls, server_pid: int | None = None) -> CpuSample:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        ticks = [int(v) for v in fields]
        # user nice system idle iowait irq softirq steal ...: busy is user to softirq but idle and iowait
        # (steal is time the hypervisor ran someone else: not ours).
        busy = sum(ticks[:7]) - ticks[3] - ticks[4]
        postgres = 0.0
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if (entry / "comm").read_text().strip() == "postgres":
                        # With its exited children: pgbench's backends end before the second sample.
                        postgres += _process_seconds(entry.name, children=True)
                except OSError:  # it exited meanwhile
                    continue
        server = _process_seconds(str(server_pid)) if server_pid else 0.0
        return cls(busy / _TICK, postgres, server)

    def per_job_ms(self, later: CpuSample, jobs: int) -> dict[str, float]:
        """CPU milliseconds per job between this sample and `later`: the steady table's efficiency
        figures, steadier than jobs/s on a shared machine, and the sum that bounds jobs/s (2 cores
        / CPU per job)."""
        if jobs <= 0:
            return {}
        out = {
            "cpu_ms_per_job": round((later.machine - self.machine) * 1000 / jobs, 3),
            "pg_cpu_ms_per_job": round((later.postgres - self.postgres) * 1000 / jobs, 3),
        }
        if later.server:
            out["server_cpu_ms_per_job"] = round((later.server - self.server) * 1000 / jobs, 3)
        return out


def _process_seconds(pid: str, children: bool = False) -> float:
    """utime + stime of one process (and, with `children`, cutime + cstime: its reaped children's), from
    /proc (the command name may hold spaces: split after it)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    rest = stat[stat.rindex(")") + 2 :].split()
    ticks = int(rest[11]) + int(rest[12]) + (int(rest[13]) + int(rest[14]) if children else 0)
    return ticks / _TICK


# --- probes: handlers tell the client when they started ------------------------------------------------


def probe(tag: object) -> None:
    """Called by benchmark handlers first thing: sends `tag start_ns` to the collector named in
    $BENCH_PROBE (host:port, UDP), if any. One sendto of a few bytes: a few microseconds."""
    target = _probe_target()
    if target is not None:
        _PROBE_SOCKET.sendto(f"{tag} {time.monotonic_ns()}".encode(), target)


_PROBE_SOCKET = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
_probe_addr: tuple[str, int] | None = None
_probe_read = False


def _probe_target() -> tuple[str, int] | None:
    global _probe_addr, _probe_read
    if not _probe_read:
        value = os.environ.get(PROBE_ENV)
        if value:
            host, _, port = value.rpartition(":")
            _probe_addr = (host, int(port))
        _probe_read = True
    return _probe_addr


@dataclass
class ProbeCollector:
    """Receives handler-start probes on a UDP port, in a thread. `starts[tag]` is the first start seen."""

    port: int = 0
    starts: dict[str, int] = field(default_factory=dict)
    #: Every probe in arrival order (the queue-depth scenario reads the gaps between starts).
    events: list[int] = field(default_factory=list)
    count: int = 0
    first_ns: int | None = None
    last_ns: int | None = None

    def __post_init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        self._sock.bind(("127.0.0.1", self.port))
        self.port = int(self._sock.getsockname()[1])
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._receive, name="probe-collector", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(256)
            except TimeoutError:
                continue
            except OSError:
                return
            self._record(data)

    def _record(self, data: bytes) -> None:
        tag, _, stamp = data.decode().partition(" ")
        value = int(stamp)
        with self._lock:
            self.count += 1
            self.events.append(value)
            self.starts.setdefault(tag, value)
            if self.first_ns is None or value < self.first_ns:
                self.first_ns = value
            if self.last_ns is None or value > self.last_ns:
                self.last_ns = value

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Reads the probes in `loop` from now on instead of in the thread.

        For clients whose event loop is busy (steady's producers): the thread waits for the GIL on every
        datagram, up to the 5 ms switch interval, and fell behind at about 200 probes a second, so a
        throttle counting them held the producers back."""
        self._stop.set()
        self._thread.join()
        self._sock.setblocking(False)
        self._loop = loop
        loop.add_reader(self._sock.fileno(), self._read_ready)

    def _read_ready(self) -> None:
        while True:
            try:
                data = self._sock.recv(256)
            except OSError:  # BlockingIOError: nothing more to read now
                return
            self._record(data)

    def wait_for(self, tag: str, timeout: float = 5.0) -> int:
        """The start of `tag`; waits a little, since the datagram may trail the job's result."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if tag in self.starts:
                    return self.starts[tag]
            if time.monotonic() > deadline:
                raise TimeoutError(f"no probe for {tag}")
            time.sleep(0.0005)

    def reset(self) -> None:
        with self._lock:
            self.starts.clear()
            self.events.clear()
            self.count = 0
            self.first_ns = self.last_ns = None

    def close(self) -> None:
        self._stop.set()
        if self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        self._thread.join(timeout=2)


class Backlog:
    """The steady scenario's throttle for the clients on asyncio (jobwire, procrastinate): jobs submitted
    but not started yet, counted from the handlers' start probes (read in the client's event loop, see
    `ProbeCollector.attach`). Producers pause while it is at `limit`. (Celery's threaded producers count
    its results in Redis, a key count that costs next to nothing.)

    It used to be a count of unfinished jobs in the database under test every 50 ms: harness load,
    and unequal. With `--pg-statements`, one steady run showed that count at 3.7 ms a call on jobwire's
    jobs table (its (endpoint, status) index keeps the dead queued and running entries of every ended
    job until vacuum): 12 % of jobwire's Postgres time, against 0.17 ms a call for procrastinate's.
    """

    def __init__(self, collector: ProbeCollector, limit: int) -> None:
        self._collector = collector
        self._base = collector.count
        self._limit = limit
        self._submitted = 0

    def take(self) -> bool:
        """Counts one more submission, unless `limit` jobs are already waiting for a handler."""
        if self._submitted - (self._collector.count - self._base) >= self._limit:
            return False
        self._submitted += 1
        return True


def first_start_cpu(
    collector: ProbeCollector, server_pid: int | None, workers: Processes, limit_s: float = 60
) -> CpuSample:
    """The CPU sample a drain starts from: taken when the first handler starts, so that the workers'
    start-up (imports, connecting) is not charged to the jobs. It blocks (1 ms polls): in a drain the
    client has nothing else to do until then, and the probes arrive on the collector's thread."""
    deadline = time.monotonic() + limit_s
    while collector.first_ns is None:
        if time.monotonic() > deadline:
            raise TimeoutError("no handler started")
        workers.check_alive()
        time.sleep(0.001)
    return CpuSample.take(server_pid)


class CountsJobs(Protocol):
    """A client whose jobs live in the database under test (jobwire, procrastinate)."""

    collector: ProbeCollector

    async def remaining(self, conn: Any) -> int: ...

    async def completed(self, conn: Any) -> int: ...


async def wait_drained(
    client: CountsJobs,
    conn: Any,
    target: int,
    limit_s: float,
    workers: Processes,
    starts: int = 0,
) -> int:
    """Waits until no job is left, then checks that `target` jobs completed; returns when it saw no job
    left (monotonic ns).

    Until `starts` handlers have started it only watches the probes, so that a 20,000-job drain is not
    also a count over 20,000 queued rows every 50 ms in the database under test; then it asks the
    database every 5 ms (also when the probes stop short for half a second: a datagram may be lost)."""
    collector = client.collector
    deadline = time.monotonic() + limit_s
    seen, quiet_since = -1, time.monotonic()
    while collector.count < starts and time.monotonic() - quiet_since < 0.5:
        if collector.count != seen:
            seen, quiet_since = collector.count, time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {collector.count} of {starts} handlers started")
        workers.check_alive()
        await asyncio.sleep(0.05)
    while await client.remaining(conn) > 0:
        if time.monotonic() > deadline:
            raise TimeoutError("jobs still unfinished")
        workers.check_alive()
        await asyncio.sleep(0.005)
    drained_at = now_ns()
    if (done := await client.completed(conn)) < target:
        raise RuntimeError(f"only {done} of {target} jobs completed")
    return drained_at


# --- worker processes ------------------------------------------------------------------------------------


@dataclass
class Processes:
    """A group of processes started together (a system's workers), stopped together."""

    argv: Sequence[str]
    count: int
    env: Mapping[str, str] = field(default_factory=dict)
    log_dir: Path | None = None
    name: str = "worker"
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self) -> Processes:
        env = {**os.environ, **self.env}
        for index in range(self.count):
            out: Any = subprocess.DEVNULL
            if self.log_dir is not None:
                self.log_dir.mkdir(parents=True, exist_ok=True)
                out = open(self.log_dir / f"{self.name}-{index}.log", "ab")  # noqa: SIM115
            self.procs.append(
                subprocess.Popen(
                    [arg.replace("{index}", str(index)) for arg in self.argv],
                    env=env,
                    cwd=ROOT,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        return self

    def check_alive(self) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{self.name} process {proc.pid} exited with {proc.returncode}")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (a graceful drain for every system here), then SIGKILL after `timeout`."""
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]


def wait_until(predicate: Any, timeout: float, interval: float = 0.05, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


# --- the client protocol: config JSON in argv[1], result JSON on the last line of stdout -----------------


def read_config() -> dict[str, Any]:
    config: dict[str, Any] = json.loads(sys.argv[1])
    return config


def emit(result: Mapping[str, Any]) -> None:
    sys.stdout.write("\nRESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()


def parse_result(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.splitlines()):
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[len("RESULT ") :])
            return result
    raise RuntimeError("the client printed no RESULT line")


def chunked(items: Iterable[Any], size: int) -> list[list[Any]]:
    batch: list[Any] = []
    out: list[list[Any]] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            out.append(batch)
            batch = []
    if batch:
        out.append(batch)
    return out


class HTTPConnection(http.client.HTTPConnection):
    """http.client with TCP_NODELAY, as urllib3/requests and httpx set it: http.client sends a request's
    headers and body in two writes, and without NODELAY the second waits for the server's delayed ACK
    (40 ms on Linux)."""

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def http_connection(addr: str) -> HTTPConnection:
    host, _, port = addr.rpartition(":")
    return HTTPConnection(host, int(port), timeout=300)
