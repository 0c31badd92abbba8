"""The procrastinate app the benchmark's procrastinate workers and client load (peers' .venv).

`python -m procrastinate --app bench.clients.procrastinate_app.app worker ...`; the database is
$BENCH_PG_DSN. Async tasks (procrastinate runs them on the worker's event loop), each probing its start.
"""

from __future__ import annotations

import os
from typing import Any

import procrastinate

from bench.common import probe

app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(conninfo=os.environ.get("BENCH_PG_DSN", "")),
)


@app.task(name="noop")
async def noop(t: str, pad: str = "") -> dict[str, Any]:
    probe(t)
    return {"ok": True}
