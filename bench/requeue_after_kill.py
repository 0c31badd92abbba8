# A measuring script: it polls conditions, starts processes and keeps its steps in one readable function.
# ruff: noqa: ASYNC110, ASYNC220, C901
"""Dispatch latency (submit -> handler start, idle worker) and the time until a job held by a worker killed
with SIGKILL starts again on another worker. Durable embedded Postgres; jobwire serve and the workers
are separate processes. Run: .venv/bin/python -m bench.requeue_after_kill"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from jobwire.server.embedded import EmbeddedPostgres

PY = sys.executable
HANDLER = """
import time, os, pathlib
def handler(job):
    started = time.time()
    if job["input"].get("hold"):
        pathlib.Path(job["input"]["hold"]).write_text(os.environ.get("W", "?"))
        from jobwire.worker import context
        while not context().cancelled: time.sleep(0.01)
        return None
    return {"started": started}
"""


def jw(*args: str, url: str) -> str:
    return subprocess.run(
        [PY, "-m", "jobwire.server", *args, "--database-url", url], check=True, capture_output=True, text=True
    ).stdout.strip()


async def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="jw-lat-"))
    pg = EmbeddedPostgres(root / "pg")
    pg.start()
    url = pg.url
    try:
        jw("migrate", url=url)
        jw("endpoint", "create", "lat", url=url)
        ck = jw("key", "create", "--role", "client", "--endpoint", "lat", url=url)
        wk = jw("key", "create", "--role", "worker", "--endpoint", "lat", url=url)
        serve = subprocess.Popen(
            [
                PY,
                "-m",
                "jobwire.server",
                "serve",
                "--database-url",
                url,
                "--http-addr",
                "127.0.0.1:18080",
                "--grpc-addr",
                "127.0.0.1:15051",
            ],
            stderr=subprocess.DEVNULL,
        )
        (root / "h.py").write_text(HANDLER)
        env = {**os.environ, "PYTHONPATH": str(root)}

        def worker(name: str) -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                [
                    PY,
                    "-m",
                    "jobwire.worker",
                    "h:handler",
                    "--endpoint",
                    "lat",
                    "--server",
                    "127.0.0.1:15051",
                    "--key",
                    wk,
                    "--worker-id",
                    name,
                ],
                env={**env, "W": name},
                stderr=subprocess.DEVNULL,
            )

        w1 = worker("w1")
        h = {"Authorization": f"Bearer {ck}"}
        async with httpx.AsyncClient(base_url="http://127.0.0.1:18080", timeout=30) as c:
            while True:
                try:
                    if (await c.get("/v2/lat/health", headers=h)).json()["workers"]["idle"] == 1:
                        break
                except Exception:
                    pass
                await asyncio.sleep(0.2)
            dispatch, rtt = [], []
            for i in range(300):
                t0 = time.time()
                r = (await c.post("/v2/lat/runsync", json={"input": {"i": i}}, headers=h)).json()
                t1 = time.time()
                dispatch.append((r["output"]["started"] - t0) * 1000)
                rtt.append((t1 - t0) * 1000)

            def q(xs, p):
                return statistics.quantiles(xs, n=100)[p - 1]

            print(
                json.dumps(
                    {
                        "dispatch_ms": {
                            "p50": round(statistics.median(dispatch[20:]), 2),
                            "p95": round(q(dispatch[20:], 95), 2),
                            "p99": round(q(dispatch[20:], 99), 2),
                        },
                        "runsync_rest_ms": {
                            "p50": round(statistics.median(rtt[20:]), 2),
                            "p95": round(q(rtt[20:], 95), 2),
                            "p99": round(q(rtt[20:], 99), 2),
                        },
                    }
                )
            )
            # requeue after SIGKILL: w1 holds a job; w2 idle; kill w1 and time until w2 starts it
            w2 = worker("w2")
            for _ in range(100):
                hw = (await c.get("/v2/lat/health", headers=h)).json()["workers"]
                if hw["idle"] >= 2:
                    break
                await asyncio.sleep(0.1)
            marks = []
            for n in range(3):
                mark = root / f"hold{n}"
                job = (await c.post("/v2/lat/run", json={"input": {"hold": str(mark)}}, headers=h)).json()[
                    "id"
                ]
                while not mark.exists():
                    await asyncio.sleep(0.005)
                victim = {"w1": w1, "w2": w2}[mark.read_text()]
                mark.unlink()
                t0 = time.time()
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                while not mark.exists():
                    await asyncio.sleep(0.005)
                marks.append(round((time.time() - t0) * 1000, 1))
                print("requeue", marks[-1], flush=True)
                name = next(k for k, v in {"w1": w1, "w2": w2}.items() if v is victim)
                replacement = worker(name)
                if name == "w1":
                    w1 = replacement
                else:
                    w2 = replacement
                await c.post(f"/v2/lat/cancel/{job}", headers=h)
                while (await c.get("/v2/lat/health", headers=h)).json()["workers"]["idle"] < 2:
                    await asyncio.sleep(0.1)
            print(json.dumps({"requeue_after_sigkill_ms": marks}))
            for p in (w1, w2, serve):
                p.terminate()
                p.wait()
    finally:
        pg.stop()


asyncio.run(main())
