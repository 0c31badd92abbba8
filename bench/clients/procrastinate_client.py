"""procrastinate's side of the scenarios (peers' .venv):
`python -m bench.clients.procrastinate_client CONFIG`.

Workers are `procrastinate worker` processes (LISTEN/NOTIFY on, the default); the client defers with
`defer_async` from one process. procrastinate keeps no results, so "result visible" is the job's row
reaching `succeeded`, polled every 1 ms.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
import time
from typing import Any

from bench.common import (
    PROBE_ENV,
    ROOT,
    Backlog,
    CpuSample,
    ProbeCollector,
    Processes,
    emit,
    first_start_cpu,
    latency_summary,
    ms,
    now_ns,
    read_config,
    wait_drained,
    wait_until,
)

CONFIG = read_config()
os.environ["BENCH_PG_DSN"] = CONFIG["dsn"]


import psycopg  # noqa: E402

from bench.clients.procrastinate_app import app, noop  # noqa: E402

PAD = "x" * 80
APP = "bench.clients.procrastinate_app.app"


class Procrastinate:
    def __init__(self, config: dict[str, Any]) -> None:
        self.c = config
        self.collector = ProbeCollector()
        self.log_dir = ROOT / config["log_dir"]

    def workers(self, count: int, concurrency: int) -> Processes:
        argv = [
            sys.executable,
            "-m",
            "procrastinate",
            "--app",
            APP,
            "worker",
            "--concurrency",
            str(concurrency),
        ]
        env = {PROBE_ENV: self.collector.address, "BENCH_PG_DSN": self.c["dsn"]}
        return Processes(argv, count, env, self.log_dir, name="procrastinate").start()

    async def completed(self, conn: Any) -> int:
        cur = await conn.execute("SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'")
        row = await cur.fetchone()
        return int(row[0])

    async def remaining(self, conn: Any) -> int:
        """Jobs not ended yet (cheaper to poll than the growing count of ended ones)."""
        cur = await conn.execute("SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')")
        row = await cur.fetchone()
        return int(row[0])

    async def submit_many(self, count: int, concurrency: int, prefix: str) -> float:
        counter = iter(range(count))
        started = now_ns()

        async def loop() -> None:
            for i in counter:
                await noop.defer_async(t=f"{prefix}{i}", pad=PAD)

        await asyncio.gather(*(loop() for _ in range(concurrency)))
        return count / ((now_ns() - started) / 1e9)

    async def warm_up(self, conn: Any, jobs: int) -> None:
        workers = self.workers(self.c["worker_procs"], self.c["worker_concurrency"])
        try:
            before = await self.completed(conn)
            await self.submit_many(jobs, 8, "warm")
            await wait_drained(self, conn, before + jobs, 120, workers)
        finally:
            workers.stop()

    async def drain(self) -> dict[str, Any]:
        n = int(self.c["jobs"])
        async with await psycopg.AsyncConnection.connect(self.c["dsn"], autocommit=True) as conn:
            await self.warm_up(conn, 300)
            base = await self.completed(conn)
            enqueue_rate = await self.submit_many(n, int(self.c["producer_concurrency"]), "d")
            self.collector.reset()
            workers = self.workers(self.c["worker_procs"], self.c["worker_concurrency"])
            try:
                cpu0 = first_start_cpu(self.collector, None, workers)
                end = await wait_drained(self, conn, base + n, 900, workers, starts=n)
                cpu1 = CpuSample.take()
            finally:
                workers.stop()
        assert self.collector.first_ns is not None
        seconds = (end - self.collector.first_ns) / 1e9
        return {
            "metrics": {"jobs_per_s": round(n / seconds, 1), **cpu0.per_job_ms(cpu1, n)},
            "info": {"jobs": n, "seconds": round(seconds, 3), "enqueue_jobs_per_s": round(enqueue_rate)},
        }

    async def steady(self) -> dict[str, Any]:
        warm_s, window_s = float(self.c["warmup_s"]), float(self.c["window_s"])
        latencies: list[float] = []
        state = {"measuring": False, "stop": False}
        self.collector.attach(asyncio.get_running_loop())
        backlog = Backlog(self.collector, int(self.c["max_backlog"]))

        async def produce(k: int) -> None:
            i = 0
            while not state["stop"]:
                if not backlog.take():
                    await asyncio.sleep(0.002)
                    continue
                t0 = now_ns()
                await noop.defer_async(t=f"s{k}-{i}", pad=PAD)
                if state["measuring"]:
                    latencies.append(ms(now_ns() - t0))
                i += 1

        async with await psycopg.AsyncConnection.connect(self.c["dsn"], autocommit=True) as conn:
            workers = self.workers(self.c["worker_procs"], self.c["worker_concurrency"])
            try:
                tasks = [asyncio.create_task(produce(k)) for k in range(int(self.c["producer_concurrency"]))]
                await asyncio.sleep(warm_s)
                c0, t0 = await self.completed(conn), now_ns()
                cpu0 = CpuSample.take()
                state["measuring"] = True
                await asyncio.sleep(window_s)
                c1, t1 = await self.completed(conn), now_ns()
                cpu1 = CpuSample.take()
                state["measuring"] = False
                state["stop"] = True
                await asyncio.gather(*tasks)
                workers.check_alive()
            finally:
                workers.stop()
        seconds = (t1 - t0) / 1e9
        return {
            "metrics": {
                "jobs_per_s": round((c1 - c0) / seconds, 1),
                **latency_summary("submit", latencies),
                **cpu0.per_job_ms(cpu1, c1 - c0),
            },
            "info": {"window_s": round(seconds, 2), "submitted_per_s": round(len(latencies) / seconds, 1)},
        }

    async def latency(self) -> dict[str, Any]:
        n, warm = int(self.c["jobs"]), int(self.c.get("warmup_jobs", 50))
        dispatch: list[float] = []
        round_trip: list[float] = []
        workers = self.workers(1, 1)
        try:
            async with await psycopg.AsyncConnection.connect(self.c["dsn"], autocommit=True) as conn:
                for i in range(warm + n):
                    tag = f"l{i}"
                    t0 = now_ns()
                    job_id = await noop.defer_async(t=tag, pad=PAD)
                    while True:
                        cur = await conn.execute(
                            "SELECT status FROM procrastinate_jobs WHERE id = %s", (job_id,)
                        )
                        row = await cur.fetchone()
                        if row is not None and row[0] == "succeeded":
                            break
                        if row is not None and row[0] in ("failed", "cancelled", "aborted"):
                            raise RuntimeError(f"job {job_id} ended {row[0]}")
                        await asyncio.sleep(0.001)
                    t1 = now_ns()
                    start = self.collector.wait_for(tag)
                    if i >= warm:
                        dispatch.append(ms(start - t0))
                        round_trip.append(ms(t1 - t0))
            workers.check_alive()
        finally:
            workers.stop()
        return {
            "metrics": {**latency_summary("dispatch", dispatch), **latency_summary("round_trip", round_trip)},
            "info": {"jobs": n},
        }

    async def queue_depth_fill(self) -> dict[str, Any]:
        depth = int(self.c["depth"])
        t0 = time.monotonic()
        template = await noop.defer_async(t="depth", pad=PAD)
        async with await psycopg.AsyncConnection.connect(self.c["dsn"], autocommit=True) as conn:
            cur = await conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'procrastinate_jobs' "
                "AND column_name <> 'id' AND is_generated = 'NEVER'"
            )
            cols = ", ".join(row[0] for row in await cur.fetchall())
            await conn.execute(
                f"INSERT INTO procrastinate_jobs ({cols}) SELECT {cols} FROM procrastinate_jobs, "
                "generate_series(1, %s) WHERE id = %s",
                (depth - 1, template),
            )
            await conn.execute("VACUUM ANALYZE procrastinate_jobs")
        return {"metrics": {}, "info": {"fill_s": round(time.monotonic() - t0, 1)}}

    def queue_depth(self) -> dict[str, Any]:
        warm, n = int(self.c["warmup_jobs"]), int(self.c["jobs"])
        workers = self.workers(1, 1)
        try:
            wait_until(lambda: self.collector.count >= warm + n + 1, 300, what="claims")
        finally:
            workers.stop()
        stamps = self.collector.events[warm : warm + n + 1]
        gaps = [ms(b - a) for a, b in itertools.pairwise(stamps)]
        return {"metrics": latency_summary("claim_cycle", gaps), "info": {"claims": len(gaps)}}


async def _main(config: dict[str, Any]) -> dict[str, Any]:
    client = Procrastinate(config)
    try:
        scenario = config["scenario"]
        if scenario == "queue_depth":
            return await asyncio.to_thread(client.queue_depth)
        async with app.open_async():
            result: dict[str, Any] = await getattr(client, scenario)()
            return result
    finally:
        client.collector.close()


if __name__ == "__main__":
    emit(asyncio.run(_main(CONFIG)))
