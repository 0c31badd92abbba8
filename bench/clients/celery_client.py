"""Celery + Redis's side of the scenarios (peers' .venv): `python -m bench.clients.celery_client CONFIG`.

Workers are `celery worker` processes (prefork pool); the client submits with `apply_async` from
threads of one process and reads results with `AsyncResult.get()` (Redis pub/sub). Completed jobs are
the result keys in Redis db 1.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

from bench.common import (
    PROBE_ENV,
    ROOT,
    CpuSample,
    ProbeCollector,
    Processes,
    emit,
    first_start_cpu,
    latency_summary,
    ms,
    now_ns,
    read_config,
)

CONFIG = read_config()
os.environ["BENCH_REDIS_URL"] = CONFIG["redis"]

import redis  # noqa: E402

from bench.clients.celery_app import echo_blob, noop  # noqa: E402

PAD = "x" * 80


class Celery:
    def __init__(self, config: dict[str, Any]) -> None:
        self.c = config
        self.collector = ProbeCollector()
        self.log_dir = ROOT / config["log_dir"]
        self.results = redis.Redis.from_url(f"{config['redis']}/1")

    def workers(self, count: int, concurrency: int) -> Processes:
        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench.clients.celery_app",
            "worker",
            "--pool",
            "prefork",
            "-c",
            str(concurrency),
            "--loglevel",
            "WARNING",
            "-n",
            "bench{index}@%h",
        ]
        env = {PROBE_ENV: self.collector.address, "BENCH_REDIS_URL": self.c["redis"]}
        return Processes(argv, count, env, self.log_dir, name="celery").start()

    def completed(self) -> int:
        return int(self.results.dbsize())

    def wait_completed(self, target: int, timeout: float, workers: Processes) -> int:
        deadline = time.monotonic() + timeout
        while True:
            if self.completed() >= target:
                return now_ns()
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {self.completed()} of {target} results stored")
            workers.check_alive()
            time.sleep(0.05)

    def submit_many(self, count: int, concurrency: int, prefix: str) -> float:
        counter = iter(range(count))
        lock = threading.Lock()
        started = now_ns()

        def loop() -> None:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                noop.apply_async(kwargs={"t": f"{prefix}{i}", "pad": PAD})

        threads = [threading.Thread(target=loop) for _ in range(concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return count / ((now_ns() - started) / 1e9)

    def warm_up(self, jobs: int) -> None:
        workers = self.workers(self.c["worker_procs"], self.c["worker_concurrency"])
        try:
            before = self.completed()
            self.submit_many(jobs, 8, "warm")
            self.wait_completed(before + jobs, 120, workers)
        finally:
            workers.stop()

    def drain(self) -> dict[str, Any]:
        n = int(self.c["jobs"])
        self.warm_up(300)
        base = self.completed()
        enqueue_rate = self.submit_many(n, int(self.c["producer_concurrency"]), "d")
        self.collector.reset()
        workers = self.workers(self.c["worker_procs"], self.c["worker_concurrency"])
        try:
            cpu0 = first_start_cpu(self.collector, None, workers)
            end = self.wait_completed(base + n, 900, workers)
            cpu1 = CpuSample.take()
        finally:
            workers.stop()
        assert self.collector.first_ns is not None
        seconds = (end - self.collector.first_ns) / 1e9
        return {
            "metrics": {"jobs_per_s": round(n / seconds, 1), **cpu0.per_job_ms(cpu1, n)},
            "info": {"jobs": n, "seconds": round(seconds, 3), "enqueue_jobs_per_s": round(enqueue_rate)},
        }

    def steady(self) -> dict[str, Any]:
        warm_s, window_s = float(self.c["warmup_s"]), float(self.c["window_s"])
        latencies: list[float] = []
        state = {"measuring": False, "stop": False}
        base = self.completed()
        counts = {"total": 0, "done": base}
        lock = threading.Lock()
        backlog = int(self.c["max_backlog"])

        def watch() -> None:
            while not state["stop"]:
                counts["done"] = self.completed()
                time.sleep(0.05)

        def produce(k: int) -> None:
            i = 0
            while not state["stop"]:
                with lock:
                    full = counts["total"] - (counts["done"] - base) >= backlog
                    if not full:
                        counts["total"] += 1
                if full:
                    time.sleep(0.002)
                    continue
                t0 = now_ns()
                noop.apply_async(kwargs={"t": f"s{k}-{i}", "pad": PAD})
                if state["measuring"]:
                    latencies.append(ms(now_ns() - t0))
                i += 1

        workers = self.workers(self.c["worker_procs"], self.c["worker_concurrency"])
        try:
            producers = int(self.c["producer_concurrency"])
            threads = [threading.Thread(target=produce, args=(k,)) for k in range(producers)]
            threads.append(threading.Thread(target=watch))
            for thread in threads:
                thread.start()
            time.sleep(warm_s)
            c0, t0 = self.completed(), now_ns()
            cpu0 = CpuSample.take()
            state["measuring"] = True
            time.sleep(window_s)
            c1, t1 = self.completed(), now_ns()
            cpu1 = CpuSample.take()
            state["measuring"] = False
            state["stop"] = True
            for thread in threads:
                thread.join()
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

    def latency(self) -> dict[str, Any]:
        n, warm = int(self.c["jobs"]), int(self.c.get("warmup_jobs", 50))
        dispatch: list[float] = []
        round_trip: list[float] = []
        workers = self.workers(1, 1)
        try:
            for i in range(warm + n):
                tag = f"l{i}"
                t0 = now_ns()
                result = noop.apply_async(kwargs={"t": tag, "pad": PAD}).get(timeout=60)
                t1 = now_ns()
                if not result.get("ok"):
                    raise RuntimeError(f"unexpected result {result}")
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

    def payload(self) -> dict[str, Any]:
        size, trips = int(self.c["bytes"]), int(self.c["trips"])
        blob = "a" * size
        workers = self.workers(1, 1)
        times: list[float] = []
        try:
            for i in range(trips + 1):
                t0 = now_ns()
                out = echo_blob.apply_async(kwargs={"t": f"p{i}", "blob": blob}).get(timeout=120)
                elapsed = ms(now_ns() - t0)
                if len(out["blob"]) != size:
                    raise RuntimeError("short output")
                if i:
                    times.append(elapsed)
        finally:
            workers.stop()
        times.sort()
        return {
            "metrics": {"round_trip_ms": round(times[len(times) // 2], 1)},
            "info": {"bytes": size, "all_ms": [round(t, 1) for t in times]},
        }


def main() -> None:
    client = Celery(CONFIG)
    try:
        emit(getattr(client, CONFIG["scenario"])())
    finally:
        client.collector.close()


if __name__ == "__main__":
    main()
