"""jobwire's side of every scenario: `python -m bench.clients.jobwire_client CONFIG_JSON` (project .venv).

The orchestrator has started the server (its own process) on a fresh database and made the endpoint
and keys; this process is the client (one process; asyncio tasks or a sequential loop, as stated per
scenario) and starts the worker processes (`python -m jobwire.worker`) itself, so that "workers start
after the queue is full" is in its hands. Completed counts are read from Postgres directly.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg  # type: ignore[import-untyped,unused-ignore]
import grpc

from bench.common import (
    PROBE_ENV,
    ROOT,
    Backlog,
    CpuSample,
    ProbeCollector,
    Processes,
    emit,
    first_start_cpu,
    http_connection,
    latency_summary,
    ms,
    now_ns,
    read_config,
    rss_bytes,
    wait_drained,
    wait_until,
)
from jobwire.client import Submitter
from jobwire.v1 import job_pb2, jobs_pb2, jobs_pb2_grpc

GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]
PAD = "x" * 80  # ~100-byte inputs, as in the issue


class Jobwire:
    def __init__(self, config: dict[str, Any]) -> None:
        self.c = config
        self.endpoint: str = config["endpoint"]
        self.metadata = (("authorization", f"Bearer {config['client_key']}"),)
        self.collector = ProbeCollector()
        self.log_dir = ROOT / config["log_dir"]

    # --- plumbing ---------------------------------------------------------------------------------

    def workers(
        self, count: int, concurrency: int, handler: str = "noop", prefetch: str = "auto"
    ) -> Processes:
        argv = [
            sys.executable,
            "-m",
            "jobwire.worker",
            f"bench.handlers:{handler}",
            "--endpoint",
            self.endpoint,
            "--server",
            self.c["grpc"],
            "--key",
            self.c["worker_key"],
            "--concurrency",
            str(concurrency),
            "--prefetch",
            prefetch,
            "--log-level",
            "WARNING",
        ]
        env = {PROBE_ENV: self.collector.address}
        return Processes(argv, count, env, self.log_dir, name=f"jobwire-{handler}").start()

    async def completed(self, conn: Any) -> int:
        value = await conn.fetchval(
            "SELECT count(*) FROM jobs WHERE endpoint = $1 AND status = 'COMPLETED'", self.endpoint
        )
        return int(value)

    async def remaining(self, conn: Any) -> int:
        """Jobs not ended yet: cheap to count (the index entries of queued and running jobs only), so that
        polling it does not load the database the way counting a growing number of ended jobs would."""
        value = await conn.fetchval(
            "SELECT count(*) FROM jobs WHERE endpoint = $1 AND status IN ('IN_QUEUE', 'IN_PROGRESS')",
            self.endpoint,
        )
        return int(value)

    def aio_stub(self) -> tuple[grpc.aio.Channel, jobs_pb2_grpc.JobServiceStub]:
        channel = grpc.aio.insecure_channel(self.c["grpc"], options=GRPC_OPTIONS)
        return channel, jobs_pb2_grpc.JobServiceStub(channel)

    async def submit_many(self, stub: Any, count: int, concurrency: int, prefix: str) -> float:
        """Submits `count` jobs over gRPC Run from `concurrency` tasks; returns jobs/s."""
        counter = iter(range(count))
        started = now_ns()

        async def loop() -> None:
            for i in counter:
                body = json.dumps({"t": f"{prefix}{i}", "pad": PAD}).encode()
                await stub.Run(
                    jobs_pb2.RunRequest(endpoint_id=self.endpoint, job=job_pb2.JobSubmission(input=body)),
                    metadata=self.metadata,
                )

        await asyncio.gather(*(loop() for _ in range(concurrency)))
        return count / ((now_ns() - started) / 1e9)

    async def warm_up(self, stub: Any, conn: Any, jobs: int) -> None:
        """Jobs through a fresh server and database before anything is measured; then the workers go."""
        workers = self.workers(self.c["worker_procs"], self.c["worker_concurrency"])
        try:
            before = await self.completed(conn)
            await self.submit_many(stub, jobs, 8, "warm")
            await wait_drained(self, conn, before + jobs, 120, workers)
        finally:
            workers.stop()

    # --- scenarios --------------------------------------------------------------------------------

    async def drain(self) -> dict[str, Any]:
        n = int(self.c["jobs"])
        conn = await asyncpg.connect(self.c["dsn"])
        channel, stub = self.aio_stub()
        try:
            await self.warm_up(stub, conn, self.c.get("warmup_jobs", 300))
            base = await self.completed(conn)
            enqueue_rate = await self.submit_many(stub, n, 16, "d")
            self.collector.reset()
            workers = self.workers(self.c["worker_procs"], self.c["worker_concurrency"])
            try:
                cpu0 = first_start_cpu(self.collector, self.c["server_pid"], workers)
                end = await wait_drained(self, conn, base + n, 900, workers, starts=n)
                cpu1 = CpuSample.take(self.c["server_pid"])
            finally:
                workers.stop()
            assert self.collector.first_ns is not None
            seconds = (end - self.collector.first_ns) / 1e9
            return {
                "metrics": {"jobs_per_s": round(n / seconds, 1), **cpu0.per_job_ms(cpu1, n)},
                "info": {"jobs": n, "seconds": round(seconds, 3), "enqueue_jobs_per_s": round(enqueue_rate)},
            }
        finally:
            await channel.close()
            await conn.close()

    async def steady(self) -> dict[str, Any]:
        warm_s, window_s = float(self.c["warmup_s"]), float(self.c["window_s"])
        producers = int(self.c["producer_concurrency"])
        conn = await asyncpg.connect(self.c["dsn"])
        channel, stub = self.aio_stub()
        latencies: list[float] = []
        measuring = False
        stop = False
        submitted = 0
        self.collector.attach(asyncio.get_running_loop())
        backlog = Backlog(self.collector, int(self.c["max_backlog"]))

        async def produce(k: int) -> None:
            nonlocal submitted
            i = 0
            while not stop:
                if not backlog.take():
                    await asyncio.sleep(0.002)
                    continue
                body = json.dumps({"t": f"s{k}-{i}", "pad": PAD}).encode()
                request = jobs_pb2.RunRequest(
                    endpoint_id=self.endpoint, job=job_pb2.JobSubmission(input=body)
                )
                t0 = now_ns()
                if submitter is None:
                    await stub.Run(request, metadata=self.metadata)
                else:
                    await submitter.submit(request)
                if measuring:
                    latencies.append(ms(now_ns() - t0))
                    submitted += 1
                i += 1

        # RunStream: the 16 submitters share one call through the client helper (jobwire.client).
        submitter = Submitter(channel, self.c["client_key"]) if self.c.get("submit") == "stream" else None
        workers = self.workers(self.c["worker_procs"], self.c["worker_concurrency"])
        try:
            tasks = [asyncio.create_task(produce(k)) for k in range(producers)]
            await asyncio.sleep(warm_s)
            c0, t0 = await self.completed(conn), now_ns()
            cpu0 = CpuSample.take(self.c["server_pid"])
            measuring = True
            await asyncio.sleep(window_s)
            c1, t1 = await self.completed(conn), now_ns()
            cpu1 = CpuSample.take(self.c["server_pid"])
            measuring = False
            stop = True
            await asyncio.gather(*tasks)
            workers.check_alive()
        finally:
            workers.stop()
            if submitter is not None:
                await submitter.close()
            await channel.close()
            await conn.close()
        seconds = (t1 - t0) / 1e9
        return {
            "metrics": {
                "jobs_per_s": round((c1 - c0) / seconds, 1),
                **latency_summary("submit", latencies),
                **cpu0.per_job_ms(cpu1, c1 - c0),
            },
            "info": {"window_s": round(seconds, 2), "submitted_per_s": round(submitted / seconds, 1)},
        }

    def latency(self) -> dict[str, Any]:
        """One idle worker (1 process, 1 slot); one client submitting sequentially with runsync."""
        transport = self.c["transport"]
        n, warm = int(self.c["jobs"]), int(self.c.get("warmup_jobs", 50))
        workers = self.workers(1, 1)
        call = self._rest_runsync() if transport == "rest" else self._grpc_runsync()
        dispatch: list[float] = []
        round_trip: list[float] = []
        try:
            for i in range(warm + n):
                tag = f"l{i}-{uuid.uuid4().hex[:6]}"
                t0 = now_ns()
                status = call(json.dumps({"t": tag, "pad": PAD}).encode())
                t1 = now_ns()
                if status != "COMPLETED":
                    raise RuntimeError(f"runsync answered {status}")
                start = self.collector.wait_for(tag)
                if i >= warm:
                    dispatch.append(ms(start - t0))
                    round_trip.append(ms(t1 - t0))
            workers.check_alive()
        finally:
            workers.stop()
        return {
            "metrics": {**latency_summary("dispatch", dispatch), **latency_summary("round_trip", round_trip)},
            "info": {"jobs": n, "transport": transport},
        }

    def _rest_runsync(self) -> Callable[[bytes], str]:
        conn = http_connection(self.c["http"])
        headers = {"Authorization": f"Bearer {self.c['client_key']}", "Content-Type": "application/json"}

        def call(body: bytes) -> str:
            conn.request(
                "POST", f"/v2/{self.endpoint}/runsync?wait=60000", b'{"input":' + body + b"}", headers
            )
            response = conn.getresponse()
            data = json.loads(response.read())
            return str(data.get("status"))

        return call

    def _grpc_runsync(self) -> Callable[[bytes], str]:
        channel = grpc.insecure_channel(self.c["grpc"], options=GRPC_OPTIONS)
        stub = jobs_pb2_grpc.JobServiceStub(channel)

        def call(body: bytes) -> str:
            response = stub.RunSync(
                jobs_pb2.RunSyncRequest(
                    endpoint_id=self.endpoint, job=job_pb2.JobSubmission(input=body), wait=60000
                ),
                metadata=self.metadata,
            )
            return str(job_pb2.JobStatus.Name(response.job.status))

        return call

    # --- queue depth ------------------------------------------------------------------------------

    async def queue_depth_fill(self) -> dict[str, Any]:
        """Fills the queue to `depth` jobs: one submitted through the API, the rest copies of its rows
        (column list read from the catalog, so the copy follows the schema)."""
        depth = int(self.c["depth"])
        conn = await asyncpg.connect(self.c["dsn"])
        try:
            self._rest_run(json.dumps({"t": "depth", "pad": PAD}).encode())
            template = await conn.fetchval(
                "SELECT id FROM jobs WHERE endpoint = $1 AND status = 'IN_QUEUE' LIMIT 1", self.endpoint
            )
            columns = [
                r["column_name"]
                for r in await conn.fetch(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = 'jobs' "
                    "AND column_name NOT IN ('seq', 'id') AND is_generated = 'NEVER'"
                )
            ]
            cols = ", ".join(columns)
            t0 = time.monotonic()
            async with conn.transaction():
                await conn.execute(
                    f"INSERT INTO jobs ({cols}, id) SELECT {cols}, 'depth-' || g "
                    "FROM jobs, generate_series(1, $2) g WHERE jobs.id = $1",
                    template,
                    depth - 1,
                )
                await conn.execute(
                    "INSERT INTO job_payloads (job_seq, kind, data) "
                    "SELECT j.seq, p.kind, p.data FROM jobs j, job_payloads p, jobs t "
                    "WHERE t.id = $1 AND p.job_seq = t.seq AND j.id LIKE 'depth-%'",
                    template,
                )
            await conn.execute("VACUUM ANALYZE jobs")
            await conn.execute("VACUUM ANALYZE job_payloads")
            queued = await conn.fetchval(
                "SELECT count(*) FROM jobs WHERE endpoint = $1 AND status = 'IN_QUEUE'", self.endpoint
            )
            return {"metrics": {}, "info": {"queued": int(queued), "fill_s": round(time.monotonic() - t0, 1)}}
        finally:
            await conn.close()

    def _rest_run(self, body: bytes) -> str:
        conn = http_connection(self.c["http"])
        headers = {"Authorization": f"Bearer {self.c['client_key']}", "Content-Type": "application/json"}
        conn.request("POST", f"/v2/{self.endpoint}/run", b'{"input":' + body + b"}", headers)
        response = conn.getresponse()
        data = json.loads(response.read())
        conn.close()
        if response.status != 200:
            raise RuntimeError(f"/run answered {response.status}: {data}")
        return str(data["id"])

    def queue_depth(self) -> dict[str, Any]:
        """One worker with one slot on a deep queue: the gap between consecutive handler starts is one
        claim cycle (report the result, claim the next job, hand it over). Without prefetch: a job held
        in the worker would start with no claim in the gap."""
        warm, n = int(self.c["warmup_jobs"]), int(self.c["jobs"])
        workers = self.workers(1, 1, prefetch="0")
        try:
            wait_until(lambda: self.collector.count >= warm + n + 1, 300, what="claims")
        finally:
            workers.stop()
        stamps = self.collector.events[warm : warm + n + 1]
        gaps = [ms(b - a) for a, b in itertools.pairwise(stamps)]
        return {"metrics": latency_summary("claim_cycle", gaps), "info": {"claims": len(gaps)}}

    # --- fan-in -----------------------------------------------------------------------------------

    async def fan_in(self) -> dict[str, Any]:
        total, hosts = int(self.c["idle_workers"]), int(self.c["host_procs"])
        pid = int(self.c["server_pid"])
        conn = await asyncpg.connect(self.c["dsn"])
        channel, stub = self.aio_stub()
        try:
            await self.warm_up(stub, conn, 200)
            await asyncio.sleep(1)
            baseline = rss_bytes(pid)
            argv = [
                sys.executable,
                "-m",
                "bench.fanin_host",
                str(total // hosts),
                self.endpoint,
                self.c["grpc"],
                self.c["worker_key"],
            ]
            fleet = Processes(argv, hosts, {PROBE_ENV: self.collector.address}, self.log_dir, "fanin").start()
            try:
                t0 = time.monotonic()
                while (
                    await conn.fetchval("SELECT count(*) FROM workers WHERE endpoint = $1", self.endpoint)
                    < (total // hosts) * hosts
                ):
                    fleet.check_alive()
                    if time.monotonic() - t0 > 180:
                        raise TimeoutError("the idle workers did not all connect")
                    await asyncio.sleep(0.2)
                connect_s = time.monotonic() - t0
                await asyncio.sleep(3)
                connected = rss_bytes(pid)
                lat = await asyncio.to_thread(self._fan_in_latency)
                after = rss_bytes(pid)
            finally:
                fleet.stop(timeout=30)
        finally:
            await channel.close()
            await conn.close()
        per_worker = (connected - baseline) / total
        return {
            "metrics": {
                "rss_per_worker_kb": round(per_worker / 1024, 1),
                "server_rss_mb": round(connected / 2**20, 1),
                **lat,
            },
            "info": {
                "idle_workers": total,
                "baseline_rss_mb": round(baseline / 2**20, 1),
                "rss_after_jobs_mb": round(after / 2**20, 1),
                "connect_s": round(connect_s, 1),
            },
        }

    def _fan_in_latency(self) -> dict[str, float]:
        call = self._grpc_runsync()
        dispatch: list[float] = []
        for i in range(int(self.c["jobs"]) + 20):
            tag = f"f{i}-{uuid.uuid4().hex[:6]}"
            t0 = now_ns()
            if call(json.dumps({"t": tag, "pad": PAD}).encode()) != "COMPLETED":
                raise RuntimeError("runsync did not complete")
            if i >= 20:
                dispatch.append(ms(self.collector.wait_for(tag) - t0))
        return latency_summary("dispatch", dispatch)

    # --- payload ----------------------------------------------------------------------------------

    def payload(self) -> dict[str, Any]:
        """A 10 MB input through run, the handler returns it, the client polls status until it has the
        10 MB output. Median of `trips` round trips (after one warm-up)."""
        size, trips = int(self.c["bytes"]), int(self.c["trips"])
        blob = "a" * size
        workers = self.workers(1, 1, handler="echo_blob")
        runs = self._rest_payload if self.c["transport"] == "rest" else self._grpc_payload
        times: list[float] = []
        try:
            for i in range(trips + 1):
                t0 = now_ns()
                received = runs(json.dumps({"t": f"p{i}", "blob": blob}).encode())
                elapsed = ms(now_ns() - t0)
                if received < size:
                    raise RuntimeError(f"output of {received} bytes")
                if i:
                    times.append(elapsed)
        finally:
            workers.stop()
        times.sort()
        return {
            "metrics": {"round_trip_ms": round(times[len(times) // 2], 1)},
            "info": {"bytes": size, "trips": trips, "all_ms": [round(t, 1) for t in times]},
        }

    def _rest_payload(self, body: bytes) -> int:
        """The output's blob length. The client parses the status document, as Runpod's SDKs do (and as
        the Celery peer's result backend does); it does not encode the output again."""
        job_id = self._rest_run(body)
        conn = http_connection(self.c["http"])
        headers = {"Authorization": f"Bearer {self.c['client_key']}"}
        try:
            while True:
                conn.request("GET", f"/v2/{self.endpoint}/status/{job_id}", headers=headers)
                data = json.loads(conn.getresponse().read())
                if data["status"] == "COMPLETED":
                    return len(data["output"]["blob"])
                if data["status"] not in ("IN_QUEUE", "IN_PROGRESS"):
                    raise RuntimeError(f"job ended {data['status']}")
                time.sleep(0.002)
        finally:
            conn.close()

    def _grpc_payload(self, body: bytes) -> int:
        """The output's length in bytes (a gRPC client gets the output's JSON text as bytes)."""
        channel = grpc.insecure_channel(self.c["grpc"], options=GRPC_OPTIONS)
        stub = jobs_pb2_grpc.JobServiceStub(channel)
        try:
            run = stub.Run(
                jobs_pb2.RunRequest(endpoint_id=self.endpoint, job=job_pb2.JobSubmission(input=body)),
                metadata=self.metadata,
            )
            while True:
                job = stub.Status(
                    jobs_pb2.StatusRequest(endpoint_id=self.endpoint, job_id=run.job.id),
                    metadata=self.metadata,
                ).job
                if job.status == job_pb2.COMPLETED:
                    return len(job.output)
                if job.status not in (job_pb2.IN_QUEUE, job_pb2.IN_PROGRESS):
                    raise RuntimeError(f"job ended {job_pb2.JobStatus.Name(job.status)}")
                time.sleep(0.002)
        finally:
            channel.close()

    # --- stream -----------------------------------------------------------------------------------

    def stream(self) -> dict[str, Any]:
        """A generator handler yields stamped chunks; the client follows them (gRPC Stream, or REST
        /stream polled as Runpod's SDKs do). Burst: `burst` chunks back to back -> chunks/s.
        Paced: `paced` chunks `gap_ms` apart -> chunk latency (yield -> client has it)."""
        workers = self.workers(1, 1, handler="chunks")
        follow = self._grpc_follow if self.c["transport"] == "grpc" else self._rest_follow
        try:
            follow({"t": "warm", "n": 20, "gap": 0})
            burst = follow({"t": "burst", "n": int(self.c["burst"]), "gap": 0})
            paced = follow({"t": "paced", "n": int(self.c["paced"]), "gap": float(self.c["gap_ms"]) / 1000})
        finally:
            workers.stop()
        first, last = burst[0][0], burst[-1][0]
        rate = (len(burst) - 1) / ((last - first) / 1e9)
        latencies = [ms(received - sent) for received, sent in paced]
        return {
            "metrics": {"chunks_per_s": round(rate, 1), **latency_summary("chunk", latencies)},
            "info": {"burst_chunks": len(burst), "paced_chunks": len(paced), "gap_ms": self.c["gap_ms"]},
        }

    def _grpc_follow(self, job_input: dict[str, Any]) -> list[tuple[int, int]]:
        channel = grpc.insecure_channel(self.c["grpc"], options=GRPC_OPTIONS)
        stub = jobs_pb2_grpc.JobServiceStub(channel)
        got: list[tuple[int, int]] = []
        try:
            run = stub.Run(
                jobs_pb2.RunRequest(
                    endpoint_id=self.endpoint, job=job_pb2.JobSubmission(input=json.dumps(job_input).encode())
                ),
                metadata=self.metadata,
            )
            for event in stub.Stream(
                jobs_pb2.StreamRequest(endpoint_id=self.endpoint, job_id=run.job.id), metadata=self.metadata
            ):
                if event.HasField("chunk"):
                    got.append((now_ns(), int(json.loads(event.chunk.output)["ns"])))
                elif event.HasField("done"):
                    break
        finally:
            channel.close()
        self._check_chunks(got, job_input)
        return got

    def _rest_follow(self, job_input: dict[str, Any]) -> list[tuple[int, int]]:
        job_id = self._rest_run(json.dumps(job_input).encode())
        conn = http_connection(self.c["http"])
        headers = {"Authorization": f"Bearer {self.c['client_key']}"}
        got: list[tuple[int, int]] = []
        deadline = time.monotonic() + 300
        try:
            while time.monotonic() < deadline:
                conn.request("GET", f"/v2/{self.endpoint}/stream/{job_id}", headers=headers)
                data = json.loads(conn.getresponse().read())
                received = now_ns()
                for item in data.get("stream", []):
                    got.append((received, int(item["output"]["ns"])))
                if data.get("status") not in ("IN_QUEUE", "IN_PROGRESS") and not data.get("stream"):
                    break
        finally:
            conn.close()
        self._check_chunks(got, job_input)
        return got

    @staticmethod
    def _check_chunks(got: list[tuple[int, int]], job_input: dict[str, Any]) -> None:
        if len(got) != int(job_input["n"]):
            raise RuntimeError(f"received {len(got)} of {job_input['n']} chunks")


async def _main(config: dict[str, Any]) -> dict[str, Any]:
    client = Jobwire(config)
    try:
        scenario: str = config["scenario"]
        sync_scenarios: dict[str, Callable[[], dict[str, Any]]] = {
            "latency": client.latency,
            "queue_depth": client.queue_depth,
            "payload": client.payload,
            "stream": client.stream,
        }
        async_scenarios: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {
            "drain": client.drain,
            "steady": client.steady,
            "queue_depth_fill": client.queue_depth_fill,
            "fan_in": client.fan_in,
        }
        if scenario in sync_scenarios:
            return await asyncio.to_thread(sync_scenarios[scenario])
        return await async_scenarios[scenario]()
    finally:
        client.collector.close()


if __name__ == "__main__":
    emit(asyncio.run(_main(read_config())))
