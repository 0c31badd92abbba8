"""The orchestrator: `scripts/bench [--quick] [--systems ...] [--scenarios ...] [--repeats N]`.

It starts one Postgres (durable) and one Redis for the whole run, then for every (system, scenario)
case gives the system a fresh database (and jobwire a fresh server process), runs the system's client
module once per repeat, and writes every repeat as a JSON line and the medians (with min/max) as a
markdown table with the targets of issue 5 under bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped,unused-ignore]

from bench import report
from bench.common import ROOT, parse_result
from bench.infra import PEERS_PYTHON, JobwireServer, Postgres, Redis, jobwire_cli, versions

SYSTEMS = ("jobwire", "celery", "procrastinate", "postgres")
SCENARIOS = ("drain", "steady", "latency", "queue_depth", "fan_in", "payload", "stream")
RESULTS = ROOT / "bench" / "results"
#: Copies of jobwire's source made by this run (removed at its end).
SNAPSHOTS: list[Path] = []


@dataclass(frozen=True)
class Sizes:
    repeats: int
    drain_jobs: int
    steady_warmup_s: float
    steady_window_s: float
    latency_jobs: int
    depths: tuple[int, ...]
    depth_jobs: int
    depth_warmup: int
    fan_in_workers: int
    fan_in_hosts: int
    fan_in_jobs: int
    payload_bytes: int
    payload_trips: int
    stream_burst: int
    stream_paced: int
    stream_gap_ms: float


FULL = Sizes(
    repeats=3,
    drain_jobs=20_000,
    steady_warmup_s=5,
    steady_window_s=15,
    latency_jobs=500,
    depths=(1_000, 1_000_000),
    depth_jobs=300,
    depth_warmup=50,
    fan_in_workers=1_000,
    fan_in_hosts=4,
    fan_in_jobs=300,
    payload_bytes=10_000_000,
    payload_trips=3,
    stream_burst=2_000,
    stream_paced=300,
    stream_gap_ms=5,
)
QUICK = Sizes(
    repeats=1,
    drain_jobs=2_000,
    steady_warmup_s=2,
    steady_window_s=5,
    latency_jobs=100,
    depths=(1_000, 20_000),
    depth_jobs=100,
    depth_warmup=20,
    fan_in_workers=200,
    fan_in_hosts=2,
    fan_in_jobs=50,
    payload_bytes=10_000_000,
    payload_trips=1,
    stream_burst=300,
    stream_paced=50,
    stream_gap_ms=5,
)

# Process counts, the same in every scenario unless the case says otherwise (the table states them).
JOBWIRE_WORKERS = (2, 10)  # processes x slots (async handler)
PROCRASTINATE_WORKERS = (2, 10)  # processes x concurrency (async task)
CELERY_WORKERS = (1, 2)  # `celery worker` processes x prefork children
PRODUCERS = 16  # concurrent submitters in the one client process (steady, and enqueueing for drain)
PGBENCH_CLIENTS = 8
#: Steady: producers pause while this many submitted jobs are not completed yet, so the queue neither runs
#: dry nor grows without bound, and submit and completion rates meet.
MAX_BACKLOG = 200


@dataclass
class Case:
    system: str
    scenario: str
    label: str
    params: dict[str, Any]
    procs: str
    fill: dict[str, Any] | None = None
    fresh_per_repeat: bool = False
    timeout: float = 1800


@dataclass
class Run:
    args: argparse.Namespace
    sizes: Sizes
    pg: Postgres
    redis: Redis | None
    stamp: str
    log_dir: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    templates: set[str] = field(default_factory=set)


# --- the cases ------------------------------------------------------------------------------------------


def plan(sizes: Sizes, systems: list[str], scenarios: list[str]) -> list[Case]:
    jw = f"1 server proc; workers {JOBWIRE_WORKERS[0]} procs x {JOBWIRE_WORKERS[1]} slots; 1 client proc"
    pc = f"workers {PROCRASTINATE_WORKERS[0]} procs x {PROCRASTINATE_WORKERS[1]}; 1 client proc"
    ce = f"redis-server; {CELERY_WORKERS[0]} worker proc x {CELERY_WORKERS[1]} prefork; 1 client proc"
    pgb = f"pgbench {PGBENCH_CLIENTS} clients, 2 threads"
    jw_w = {"worker_procs": JOBWIRE_WORKERS[0], "worker_concurrency": JOBWIRE_WORKERS[1]}
    pc_w = {"worker_procs": PROCRASTINATE_WORKERS[0], "worker_concurrency": PROCRASTINATE_WORKERS[1]}
    ce_w = {"worker_procs": CELERY_WORKERS[0], "worker_concurrency": CELERY_WORKERS[1]}
    cases: list[Case] = []
    add = cases.append

    if "drain" in scenarios:
        drain = {"jobs": sizes.drain_jobs, "producer_concurrency": PRODUCERS}
        add(Case("jobwire", "drain", "jobwire", {**drain, **jw_w}, jw, fresh_per_repeat=True))
        add(Case("celery", "drain", "Celery + Redis", {**drain, **ce_w}, ce, fresh_per_repeat=True))
        add(Case("procrastinate", "drain", "procrastinate", {**drain, **pc_w}, pc, fresh_per_repeat=True))
        for batch in (1, 10):
            label = "pgbench claim+complete" + (" x10 batched" if batch > 1 else "")
            add(
                Case(
                    "postgres",
                    "drain",
                    label,
                    {**drain, "batch": batch, "clients": PGBENCH_CLIENTS},
                    pgb,
                    fresh_per_repeat=True,
                )
            )
    if "steady" in scenarios:
        steady = {
            "warmup_s": sizes.steady_warmup_s,
            "window_s": sizes.steady_window_s,
            "producer_concurrency": PRODUCERS,
            "max_backlog": MAX_BACKLOG,
        }
        add(
            Case(
                "jobwire",
                "steady",
                "jobwire (gRPC Run)",
                {**steady, **jw_w},
                jw + f" ({PRODUCERS} submitters)",
            )
        )
        add(
            Case(
                "jobwire",
                "steady",
                "jobwire (gRPC RunStream)",
                {**steady, **jw_w, "submit": "stream"},
                jw + f" ({PRODUCERS} submitters, one stream)",
            )
        )
        add(Case("celery", "steady", "Celery + Redis", {**steady, **ce_w}, ce + f" ({PRODUCERS} threads)"))
        add(
            Case(
                "procrastinate",
                "steady",
                "procrastinate",
                {**steady, **pc_w},
                pc + f" ({PRODUCERS} submitters)",
            )
        )
        for batch in (1, 10):
            label = "pgbench lifecycle" + (" x10 batched" if batch > 1 else "")
            add(
                Case("postgres", "steady", label, {**steady, "batch": batch, "clients": PGBENCH_CLIENTS}, pgb)
            )
    if "latency" in scenarios:
        lat = {"jobs": sizes.latency_jobs, "warmup_jobs": 50}
        one = "1 worker proc x 1 slot; 1 sequential client"
        add(
            Case(
                "jobwire",
                "latency",
                "jobwire REST runsync",
                {**lat, "transport": "rest"},
                "1 server proc; " + one,
            )
        )
        add(
            Case(
                "jobwire",
                "latency",
                "jobwire gRPC RunSync",
                {**lat, "transport": "grpc"},
                "1 server proc; " + one,
            )
        )
        add(
            Case(
                "celery",
                "latency",
                "Celery + Redis",
                lat,
                "redis-server; 1 worker proc x 1 prefork; 1 sequential client",
            )
        )
        add(Case("procrastinate", "latency", "procrastinate", lat, one + " (polls status every 1 ms)"))
        add(Case("postgres", "latency", "pgbench lifecycle (1 client)", lat, "pgbench 1 client"))
    if "queue_depth" in scenarios:
        for depth in sizes.depths:
            total = depth + sizes.repeats * (sizes.depth_jobs + sizes.depth_warmup + 2) + 10
            params = {"depth": depth, "jobs": sizes.depth_jobs, "warmup_jobs": sizes.depth_warmup}
            fill = {"depth": total}
            name = f"{depth:,} queued"
            add(Case("jobwire", "queue_depth", f"jobwire, {name}", params, "1 worker proc x 1 slot", fill))
            add(
                Case(
                    "procrastinate",
                    "queue_depth",
                    f"procrastinate, {name}",
                    params,
                    "1 worker proc x 1",
                    fill,
                )
            )
            add(
                Case(
                    "postgres",
                    "queue_depth",
                    f"pgbench claim+complete, {name}",
                    params,
                    "pgbench 1 client",
                    fill,
                )
            )
    if "fan_in" in scenarios:
        fan = {
            "idle_workers": sizes.fan_in_workers,
            "host_procs": sizes.fan_in_hosts,
            "jobs": sizes.fan_in_jobs,
        }
        add(
            Case(
                "jobwire",
                "fan_in",
                f"jobwire, {sizes.fan_in_workers:,} idle workers",
                {**fan, **jw_w},
                f"1 server proc; {sizes.fan_in_workers} workers x 1 slot in {sizes.fan_in_hosts} procs",
            )
        )
    if "payload" in scenarios:
        pay = {"bytes": sizes.payload_bytes, "trips": sizes.payload_trips}
        add(
            Case(
                "jobwire",
                "payload",
                "jobwire REST run -> status",
                {**pay, "transport": "rest"},
                "1 worker x 1",
            )
        )
        add(
            Case(
                "jobwire",
                "payload",
                "jobwire gRPC Run -> Status",
                {**pay, "transport": "grpc"},
                "1 worker x 1",
            )
        )
        add(Case("celery", "payload", "Celery + Redis", pay, "1 worker proc x 1 prefork"))
        add(
            Case(
                "postgres",
                "payload",
                "Postgres alone (store+read in, store+read out)",
                pay,
                "asyncpg, 1 conn",
            )
        )
    if "stream" in scenarios:
        st = {"burst": sizes.stream_burst, "paced": sizes.stream_paced, "gap_ms": sizes.stream_gap_ms}
        add(Case("jobwire", "stream", "jobwire gRPC Stream", {**st, "transport": "grpc"}, "1 worker x 1"))
        add(
            Case(
                "jobwire",
                "stream",
                "jobwire REST /stream (polled)",
                {**st, "transport": "rest"},
                "1 worker x 1",
            )
        )
    return [c for c in cases if c.system in systems]


# --- system environments ---------------------------------------------------------------------------------


@contextmanager
def environment(run: Run, case: Case) -> Iterator[dict[str, Any]]:
    """A fresh database (and for jobwire a fresh server) for one case; yields the client's config."""
    pg, log_dir = run.pg, run.log_dir
    base: dict[str, Any] = {"log_dir": str(log_dir.relative_to(ROOT))}
    if case.system == "jobwire":
        db = "bench_jobwire"
        asyncio.run(pg.create_database(db, template=template(run, "jobwire")))
        server = JobwireServer.start(pg.url_for(db), log_dir / "jobwire-server.log")
        profiler = start_profiler(run, case, server.proc.pid)
        try:
            with statement_stats(run, case, db):
                yield {
                    **base,
                    "dsn": pg.dsn_for(db),
                    "grpc": server.grpc,
                    "http": server.http,
                    "endpoint": server.endpoint,
                    "client_key": server.client_key,
                    "worker_key": server.worker_key,
                    "server_pid": server.proc.pid,
                }
            server.check_alive()
        finally:
            stop_profiler(profiler)
            server.stop()
            asyncio.run(pg.drop_database(db))
    elif case.system == "procrastinate":
        db = "bench_procrastinate"
        asyncio.run(pg.create_database(db, template=template(run, "procrastinate")))
        try:
            with statement_stats(run, case, db):
                yield {**base, "dsn": pg.dsn_for(db)}
        finally:
            asyncio.run(pg.drop_database(db))
    elif case.system == "celery":
        assert run.redis is not None
        redis_command(run.redis.port, "FLUSHALL")
        yield {**base, "redis": run.redis.url, "redis_pid": run.redis.proc.pid}
    else:
        db = "bench_pgbench"
        asyncio.run(pg.create_database(db))
        asyncio.run(pg.execute((ROOT / "bench" / "pgbench" / "schema.sql").read_text(), database=db))
        try:
            with statement_stats(run, case, db):
                yield {**base, "dsn": pg.dsn_for(db), "bin_dir": str(pg.bin_dir)}
        finally:
            asyncio.run(pg.drop_database(db))


#: The case's statements, most execution time first (lock waits included; commits' WAL flushes not).
STATEMENTS = """
    SELECT calls, round(total_exec_time::numeric, 1) AS ms, round(max_exec_time::numeric, 1) AS max_ms, rows,
           left(regexp_replace(query, '\\s+', ' ', 'g'), 200) AS query
    FROM pg_stat_statements
    WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
    ORDER BY total_exec_time DESC LIMIT 30
"""


@contextmanager
def statement_stats(run: Run, case: Case, db: str) -> Iterator[None]:
    """`--pg-statements`: what the case asked of Postgres, per statement (calls, total ms, rows), written
    next to the results. The profile of the server says where its CPU goes; this says what each job
    costs the database; the longest call tells a lock wait or an outlier from a steady cost."""
    if not run.args.pg_statements:
        yield
        return
    out = RESULTS / f"{run.stamp}-statements-{case.scenario}-{_slug(case.label)}.txt"
    reset = ("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", "SELECT pg_stat_statements_reset()")
    try:
        asyncio.run(run.pg.execute(*reset, database=db))
    except asyncpg.PostgresError as error:  # an external Postgres without the library preloaded
        out.write_text(f"pg_stat_statements unavailable: {error}\n")
        yield
        return
    yield
    rows = asyncio.run(run.pg.fetch(STATEMENTS, database=db))
    lines = [f"{'calls':>8} {'total ms':>10} {'max ms':>8} {'rows':>8}  statement"]
    lines += [f"{r['calls']:>8} {r['ms']:>10} {r['max_ms']:>8} {r['rows']:>8}  {r['query']}" for r in rows]
    out.write_text("\n".join(lines) + "\n")


def template(run: Run, system: str) -> str:
    """A database with the system's schema, made once per run and cloned for every case."""
    name = f"bench_{system}_tpl"
    if name in run.templates:
        return name
    asyncio.run(run.pg.create_database(name))
    if system == "jobwire":
        jobwire_cli("migrate", database_url=run.pg.url_for(name))
    else:
        env_app = "bench.clients.procrastinate_app.app"
        result = subprocess.run(
            [str(PEERS_PYTHON), "-m", "procrastinate", "--app", env_app, "schema", "--apply"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            env={**_env(), "BENCH_PG_DSN": run.pg.dsn_for(name)},
        )
        if result.returncode != 0:
            raise RuntimeError(f"procrastinate schema --apply failed: {result.stderr[-1500:]}")
    run.templates.add(name)
    return name


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


def redis_command(port: int, *parts: str) -> bytes:
    payload = f"*{len(parts)}\r\n".encode() + b"".join(f"${len(p)}\r\n{p}\r\n".encode() for p in parts)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(payload)
        return sock.recv(4096)


def start_profiler(run: Run, case: Case, pid: int) -> subprocess.Popen[bytes] | None:
    """`--profile`: py-spy samples the jobwire server for the whole case (collapsed stacks)."""
    if not run.args.profile:
        return None
    spy = PEERS_PYTHON.parent / "py-spy"
    if not spy.exists():  # the project's dev dependencies have it too
        spy = ROOT / ".venv" / "bin" / "py-spy"
    out = RESULTS / f"{run.stamp}-profile-{case.scenario}-{_slug(case.label)}.txt"
    return subprocess.Popen(
        [str(spy), "record", "--pid", str(pid), "--format", "raw", "--rate", "200", "--output", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_profiler(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None:
        return
    proc.send_signal(2)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-")[:40]


# --- running --------------------------------------------------------------------------------------------

CLIENTS = {
    "jobwire": (sys.executable, "bench.clients.jobwire_client"),
    "postgres": (sys.executable, "bench.clients.postgres_client"),
    "celery": (str(PEERS_PYTHON), "bench.clients.celery_client"),
    "procrastinate": (str(PEERS_PYTHON), "bench.clients.procrastinate_client"),
}


def call_client(case: Case, config: dict[str, Any], scenario: str, log_dir: Path) -> dict[str, Any]:
    python, module = CLIENTS[case.system]
    fill = (case.fill or {}) if scenario.endswith("_fill") else {}
    payload = json.dumps({**config, **case.params, **fill, "scenario": scenario})
    result = subprocess.run(
        [python, "-m", module, payload],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=case.timeout,
        check=False,
    )
    with open(log_dir / f"client-{case.system}.log", "a") as log:
        log.write(f"=== {case.label} {scenario}\n{result.stdout}\n{result.stderr}\n")
    if result.returncode != 0:
        tail = (result.stderr.strip() or result.stdout.strip())[-1500:]
        raise RuntimeError(f"client exited with {result.returncode}: {tail}")
    return parse_result(result.stdout)


def run_case(run: Run, case: Case) -> None:
    repeats = run.sizes.repeats
    print(f"\n== {case.scenario}: {case.label}", flush=True)
    repeat = 0
    while repeat < repeats:
        try:
            with environment(run, case) as config:
                if case.fill is not None:
                    filled = call_client(case, config, f"{case.scenario}_fill", run.log_dir)
                    print(f"   filled: {filled.get('info')}", flush=True)
                while repeat < repeats:
                    t0 = time.monotonic()
                    out = call_client(case, config, case.scenario, run.log_dir)
                    record(run, case, repeat, out, None, time.monotonic() - t0)
                    repeat += 1
                    if case.fresh_per_repeat:
                        break
        except Exception as error:  # recorded, and the run goes on with the next case
            message = f"{type(error).__name__}: {error}"
            if run.args.verbose:
                traceback.print_exc()
            record(run, case, repeat, None, message, 0.0)
            return


def record(
    run: Run, case: Case, repeat: int, out: dict[str, Any] | None, error: str | None, secs: float
) -> None:
    row = {
        "run": run.stamp,
        "system": case.system,
        "scenario": case.scenario,
        "label": case.label,
        "repeat": repeat,
        "procs": case.procs,
        "params": case.params,
        "metrics": (out or {}).get("metrics", {}),
        "info": (out or {}).get("info", {}),
        "error": error,
        "seconds": round(secs, 1),
    }
    run.rows.append(row)
    with open(RESULTS / f"{run.stamp}.jsonl", "a") as sink:
        sink.write(json.dumps(row) + "\n")
    shown = error if error else json.dumps(row["metrics"])
    print(f"   repeat {repeat + 1}: {shown}  ({secs:.1f} s)", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench", description=__doc__.split("\n\n")[0] if __doc__ else ""
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes, 1 repeat: a smoke run of a few minutes"
    )
    parser.add_argument(
        "--systems", default=",".join(SYSTEMS), help=f"comma-separated, of {','.join(SYSTEMS)}"
    )
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help=f"comma-separated, of {','.join(SCENARIOS)}"
    )
    parser.add_argument("--repeats", type=int, help="repeats per figure (default 3, --quick 1)")
    parser.add_argument("--drain-jobs", type=int, help="N of the drain scenario (default 20000)")
    parser.add_argument(
        "--max-depth", type=int, help="the deep queue of the queue-depth scenario (default 1000000)"
    )
    parser.add_argument(
        "--redis-fsync",
        default="always",
        choices=["always", "everysec", "off"],
        help="Redis appendfsync (default always: as durable as Postgres's synchronous commit)",
    )
    parser.add_argument(
        "--postgres",
        default="durable",
        choices=["durable", "unsafe"],
        help="unsafe: fsync and synchronous_commit off, for comparison only",
    )
    parser.add_argument(
        "--jobwire-tree",
        default="frozen",
        choices=["frozen", "head", "worktree"],
        help="jobwire's source: a copy of the working tree taken at the start (default), the last "
        "commit, or the live working tree",
    )
    parser.add_argument("--profile", action="store_true", help="py-spy the jobwire server during its cases")
    parser.add_argument(
        "--pg-statements",
        action="store_true",
        help="each Postgres case's statements by execution time (pg_stat_statements; embedded Postgres)",
    )
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    for name, allowed in (("systems", SYSTEMS), ("scenarios", SCENARIOS)):
        values = [v for v in getattr(args, name).split(",") if v]
        unknown = set(values) - set(allowed)
        if unknown:
            parser.error(f"unknown {name}: {', '.join(sorted(unknown))}")
        setattr(args, name, values)
    return args


def sizes_for(args: argparse.Namespace) -> Sizes:
    base = QUICK if args.quick else FULL
    changes: dict[str, Any] = {}
    if args.repeats:
        changes["repeats"] = args.repeats
    if args.drain_jobs:
        changes["drain_jobs"] = args.drain_jobs
    if args.max_depth:
        changes["depths"] = (base.depths[0], args.max_depth)
    from dataclasses import replace

    return replace(base, **changes)


def use_snapshot(tree: str) -> str:
    """Runs jobwire from a copy of its source taken when the run starts, so that edits made in the
    working tree while a run lasts (other engineers work here too) cannot change or break it halfway:
    `frozen` copies the working tree as it is, `head` exports the last commit, `worktree` uses the live
    tree. Every child process inherits PYTHONPATH, which comes before the editable install's paths.
    Returns a description of the source (the commit, and whether uncommitted edits are in)."""
    import os
    import shutil
    import tempfile

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    dirs = ("gen", "server", "worker", "client", "migrations")
    edited = subprocess.run(
        ["git", "status", "--porcelain", "--", *dirs], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    if tree == "worktree":
        return f"{commit} + live working tree" if edited else commit
    snap = Path(tempfile.mkdtemp(prefix=f"jobwire-bench-src-{commit}-"))
    SNAPSHOTS.append(snap)
    if tree == "head":
        archive = subprocess.run(
            ["git", "archive", "--format=tar", "HEAD", *dirs], cwd=ROOT, capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(snap)], input=archive.stdout, check=True)
        described = commit
    else:
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        for name in dirs:
            shutil.copytree(ROOT / name, snap / name, ignore=ignore)
        described = f"{commit} + uncommitted edits (frozen at start)" if edited else commit
    paths = [str(snap / d) for d in ("gen", "server", "worker", "client")] + [str(ROOT)]
    os.environ["PYTHONPATH"] = os.pathsep.join(paths)
    sys.path[:0] = paths
    imports = "import jobwire.server.cli, jobwire.worker, jobwire.client"
    check = subprocess.run([sys.executable, "-c", imports], capture_output=True, text=True)
    if check.returncode != 0:
        raise SystemExit(f"bench: jobwire's source ({tree}) does not import: {check.stderr.strip()[-800:]}")
    return described


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    jobwire_source = use_snapshot(args.jobwire_tree)
    sizes = sizes_for(args)
    stamp = dt.datetime.now().strftime("%Y-%m-%d-%H%M%S") + ("-quick" if args.quick else "")
    RESULTS.mkdir(parents=True, exist_ok=True)
    log_dir = RESULTS / "logs" / stamp
    log_dir.mkdir(parents=True, exist_ok=True)
    cases = plan(sizes, args.systems, args.scenarios)
    print(
        f"bench: {len(cases)} cases, {sizes.repeats} repeat(s) each; "
        f"results in {RESULTS.relative_to(ROOT)}/{stamp}.*"
    )
    started = time.monotonic()
    pg = Postgres.start(args.postgres, statements=args.pg_statements)
    redis = Redis.start(args.redis_fsync, log_dir) if "celery" in args.systems else None
    try:
        pg_settings = asyncio.run(pg.settings())
        meta = versions(pg, pg_settings, redis)
        meta.update(
            {
                "mode": "quick" if args.quick else "full",
                "sizes": sizes.__dict__ | {"depths": list(sizes.depths)},
                "redis_appendfsync": args.redis_fsync if redis else None,
                "postgres_mode": args.postgres,
                "started": dt.datetime.now().isoformat(timespec="seconds"),
                "jobwire_source": jobwire_source,
            }
        )
        with open(RESULTS / f"{stamp}.jsonl", "a") as sink:
            sink.write(json.dumps({"run": stamp, "meta": meta}) + "\n")
        run = Run(args, sizes, pg, redis, stamp, log_dir)
        for case in cases:
            run_case(run, case)
        meta["duration_s"] = round(time.monotonic() - started)
        with open(RESULTS / f"{stamp}.jsonl", "a") as sink:
            sink.write(json.dumps({"run": stamp, "meta_end": {"duration_s": meta["duration_s"]}}) + "\n")
        markdown = report.render(meta, run.rows)
        (RESULTS / f"{stamp}.md").write_text(markdown)
        if not args.quick and set(args.systems) == set(SYSTEMS) and set(args.scenarios) == set(SCENARIOS):
            (RESULTS / "latest.md").write_text(markdown)
        print("\n" + markdown)
    finally:
        if redis is not None:
            redis.stop()
        pg.stop()
        import shutil

        for snap in SNAPSHOTS:
            shutil.rmtree(snap, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
