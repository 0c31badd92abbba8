"""Hosts many idle jobwire workers in one process for the fan-in scenario:
`python -m bench.fanin_host COUNT ENDPOINT SERVER KEY`.

Each `Worker` has its own channel (the SDK uses a local subchannel pool), so each is its own TCP
connection and stream to the server, as separate machines' workers would be.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

from bench.handlers import noop
from jobwire.worker import Backoff, Worker


async def main(count: int, endpoint: str, server: str, key: str) -> None:
    workers = [
        Worker(noop, endpoint=endpoint, key=key, server=server, concurrency=1, backoff=Backoff())
        for _ in range(count)
    ]
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: [w.drain() for w in workers])
    tasks = [asyncio.create_task(w.run()) for w in workers]
    for task in tasks:
        with contextlib.suppress(Exception):
            await task


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]))
