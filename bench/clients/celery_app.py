"""The Celery app of the benchmark (peers' .venv): Redis as broker (db 0) and result backend (db 1),
both $BENCH_REDIS_URL. `celery -A bench.clients.celery_app worker ...`. Defaults otherwise (JSON,
acks on receipt, prefetch 4), as a user would run it; results are stored, as jobwire stores them.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

from bench.common import probe

REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379")

app = Celery("bench", broker=f"{REDIS}/0", backend=f"{REDIS}/1")
app.conf.update(broker_connection_retry_on_startup=True, worker_hijack_root_logger=False)


@app.task(name="noop")
def noop(t: str, pad: str = "") -> dict[str, Any]:
    probe(t)
    return {"ok": True}


@app.task(name="echo_blob")
def echo_blob(t: str, blob: str) -> dict[str, Any]:
    probe(t)
    return {"blob": blob}
