"""The jobwire handlers the benchmark's worker processes run (`python -m jobwire.worker bench.handlers:X`).

Async handlers: the cheapest path of the SDK (they run on the worker's event loop, no thread hop).
Each calls `probe()` first, so the client learns when the handler started.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from bench.common import probe


async def noop(job: dict[str, Any]) -> dict[str, Any]:
    probe(job["input"].get("t", "-"))
    return {"ok": True}


async def echo_blob(job: dict[str, Any]) -> dict[str, Any]:
    """The payload scenario: the 10 MB input comes back as the output."""
    probe(job["input"].get("t", "-"))
    return {"blob": job["input"]["blob"]}


async def chunks(job: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    """The stream scenario: `n` chunks, each stamped when yielded, `gap` seconds apart."""
    import time

    probe(job["input"].get("t", "-"))
    n, gap = int(job["input"]["n"]), float(job["input"].get("gap", 0))
    for i in range(n):
        if gap:
            await asyncio.sleep(gap)
        yield {"i": i, "ns": time.monotonic_ns()}
