"""Postgres alone: pgbench running the SQL of a hand-written queue (bench/pgbench/*.sql), and asyncpg
storing and reading the payload scenario's documents. `python -m bench.clients.postgres_client CONFIG`.

Every job's submit, claim and complete is its own commit (synchronous, like every system here); the
`_batch10` scripts do ten jobs per statement. pgbench runs with `-M prepared` and `-j 2` threads.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped,unused-ignore]

from bench.common import ROOT, CpuSample, emit, latency_summary, read_config

SCRIPTS = ROOT / "bench" / "pgbench"
PAD = "x" * 80


class Pgbench:
    def __init__(self, config: dict[str, Any]) -> None:
        self.c = config
        self.binary = str(Path(config["bin_dir"]) / "pgbench")

    def pgbench(
        self, script: str, clients: int, *limit: str, log_dir: Path | None = None
    ) -> dict[str, float]:
        args = [
            self.binary,
            "-n",
            "-M",
            "prepared",
            "-c",
            str(clients),
            "-j",
            str(min(clients, 2)),
            *limit,
            "-f",
            str(SCRIPTS / script),
            self.c["dsn"],
        ]
        if log_dir is not None:
            args[1:1] = ["-l", "--log-prefix", str(log_dir / "tx")]
        result = subprocess.run(args, capture_output=True, text=True, check=False, timeout=1800)
        if result.returncode != 0:
            raise RuntimeError(f"pgbench failed: {result.stderr.strip()[-1500:]}")
        tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", result.stdout)
        done = re.search(r"number of transactions actually processed: (\d+)", result.stdout)
        failed = re.search(r"number of failed transactions: (\d+)", result.stdout)
        if tps is None or done is None:
            raise RuntimeError(f"cannot read pgbench's output: {result.stdout[-800:]}")
        return {
            "tps": float(tps.group(1)),
            "transactions": float(done.group(1)),
            "failed": float(failed.group(1)) if failed else 0.0,
        }

    async def sql(self, *statements: str) -> Any:
        conn = await asyncpg.connect(self.c["dsn"])
        try:
            value = None
            for statement in statements:
                value = await conn.fetchval(statement)
            return value
        finally:
            await conn.close()

    def fill(self, count: int) -> None:
        asyncio.run(
            self.sql(
                "INSERT INTO queue (payload) SELECT jsonb_build_object('t', 'fill', 'pad', "
                f"'{PAD}') FROM generate_series(1, {count})",
                "VACUUM ANALYZE queue",
            )
        )

    def done(self) -> int:
        return int(asyncio.run(self.sql("SELECT count(*) FROM queue WHERE status = 'done'")))

    @staticmethod
    def latencies(log_dir: Path) -> list[float]:
        values: list[float] = []
        for path in sorted(log_dir.glob("tx*")):
            for line in path.read_text().splitlines():
                values.append(int(line.split()[2]) / 1000)  # microseconds -> ms
        return values

    # --- scenarios --------------------------------------------------------------------------------

    def steady(self) -> dict[str, Any]:
        """Insert + claim + complete from 8 clients for `window_s` (after `warmup_s`): jobs/s."""
        batch = int(self.c["batch"])
        script = "lifecycle_batch10.sql" if batch > 1 else "lifecycle.sql"
        clients = int(self.c["clients"])
        self.pgbench(script, clients, "-T", str(int(self.c["warmup_s"])))
        cpu0 = CpuSample.take()
        run = self.pgbench(script, clients, "-T", str(int(self.c["window_s"])))
        cpu1 = CpuSample.take()
        return {
            # CPU per job includes pgbench's connections (set up inside the sample): a little above
            # what the statements alone cost.
            "metrics": {
                "jobs_per_s": round(run["tps"] * batch, 1),
                **cpu0.per_job_ms(cpu1, int(run["transactions"]) * batch),
            },
            "info": {"clients": clients, "batch": batch, "failed": run["failed"]},
        }

    def drain(self) -> dict[str, Any]:
        """N queued rows, then 8 clients claim and complete until they are gone: jobs/s."""
        n, batch, clients = int(self.c["jobs"]), int(self.c["batch"]), int(self.c["clients"])
        script = "claim_complete_batch10.sql" if batch > 1 else "claim_complete.sql"
        self.fill(300)
        self.pgbench(script, clients, "-t", str(300 // clients // batch))  # warm-up
        before = self.done()
        self.fill(n)
        cpu0 = CpuSample.take()
        run = self.pgbench(script, clients, "-t", str(n // clients // batch))
        cpu1 = CpuSample.take()
        drained = self.done() - before
        seconds = run["transactions"] / run["tps"]
        return {
            "metrics": {"jobs_per_s": round(drained / seconds, 1), **cpu0.per_job_ms(cpu1, drained)},
            "info": {"jobs": drained, "seconds": round(seconds, 3), "clients": clients, "batch": batch},
        }

    def latency(self) -> dict[str, Any]:
        """One client runs the lifecycle script `jobs` times: a job's three commits, back to back."""
        n, warm = int(self.c["jobs"]), int(self.c.get("warmup_jobs", 50))
        with tempfile.TemporaryDirectory() as tmp:
            self.pgbench("lifecycle.sql", 1, "-t", str(n + warm), log_dir=Path(tmp))
            values = self.latencies(Path(tmp))[warm:]
        return {"metrics": latency_summary("round_trip", values), "info": {"jobs": len(values)}}

    def queue_depth_fill(self) -> dict[str, Any]:
        t0 = time.monotonic()
        self.fill(int(self.c["depth"]))
        return {"metrics": {}, "info": {"fill_s": round(time.monotonic() - t0, 1)}}

    def queue_depth(self) -> dict[str, Any]:
        """One client claims and completes one job at a time from the deep queue."""
        n, warm = int(self.c["jobs"]), int(self.c["warmup_jobs"])
        with tempfile.TemporaryDirectory() as tmp:
            self.pgbench("claim_complete.sql", 1, "-t", str(n + warm), log_dir=Path(tmp))
            values = self.latencies(Path(tmp))[warm:]
        return {"metrics": latency_summary("claim_cycle", values), "info": {"claims": len(values)}}

    def payload(self) -> dict[str, Any]:
        """What Postgres alone does for a payload round trip: store the input, read it, store the output,
        read it (four statements, each its own commit, as bytea over one asyncpg connection)."""
        size, trips = int(self.c["bytes"]), int(self.c["trips"])
        body = json.dumps({"t": "p", "blob": "a" * size}).encode()

        async def trip(conn: Any) -> float:
            t0 = time.perf_counter()
            first = await conn.fetchval("INSERT INTO blobs (data) VALUES ($1) RETURNING id", body)
            data = await conn.fetchval("SELECT data FROM blobs WHERE id = $1", first)
            second = await conn.fetchval("INSERT INTO blobs (data) VALUES ($1) RETURNING id", data)
            out = await conn.fetchval("SELECT data FROM blobs WHERE id = $1", second)
            assert len(out) == len(body)
            return (time.perf_counter() - t0) * 1000

        async def main() -> list[float]:
            conn = await asyncpg.connect(self.c["dsn"])
            try:
                return [await trip(conn) for _ in range(trips + 1)][1:]
            finally:
                await conn.close()

        times = sorted(asyncio.run(main()))
        return {
            "metrics": {"round_trip_ms": round(times[len(times) // 2], 1)},
            "info": {"bytes": len(body), "all_ms": [round(t, 1) for t in times]},
        }


def main() -> None:
    config = read_config()
    client = Pgbench(config)
    emit(getattr(client, config["scenario"])())


if __name__ == "__main__":
    main()
