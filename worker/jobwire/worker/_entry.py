"""`run_worker`: the blocking entry point of a worker process, with signal handling."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Unpack

from jobwire.worker._runner import Handler
from jobwire.worker._worker import Worker, WorkerOptions

log = logging.getLogger("jobwire.worker")

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def run_worker(handler: Handler, **options: Unpack[WorkerOptions]) -> None:
    """Runs a `Worker` with `handler` until it drained; takes `Worker`'s keyword arguments.

    SIGTERM or SIGINT drains the worker: it tells the server, takes no new job, lets the running ones
    finish and report, then returns. A second signal stops it at once (KeyboardInterrupt; the server
    requeues the unfinished jobs). Raises `WorkerRejected` if the server refuses the worker and
    `WorkerRecycle` when the process should be restarted.
    """
    worker = Worker(handler, **options)
    try:
        asyncio.run(_serve(worker))
    except asyncio.CancelledError:  # the second signal cancelled the main task
        raise KeyboardInterrupt from None


async def _serve(worker: Worker) -> None:
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    received: list[signal.Signals] = []

    def on_signal(signum: signal.Signals) -> None:
        received.append(signum)
        if len(received) == 1:
            log.info("%s: draining (send it again to stop at once)", signum.name)
            worker.drain()
        elif main is not None:
            log.warning("%s again: stopping without waiting for the running jobs", signum.name)
            main.cancel()

    installed = []
    for signum in _SIGNALS:
        try:
            loop.add_signal_handler(signum, on_signal, signum)
        except (NotImplementedError, RuntimeError):  # Windows, or not the main thread: defaults stay
            continue
        installed.append(signum)
    try:
        await worker.run()
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
