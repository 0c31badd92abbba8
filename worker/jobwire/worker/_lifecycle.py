"""Whether the worker drains, and why it must be restarted: shared by the worker and its sessions."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

log = logging.getLogger("jobwire.worker")


class Lifecycle:
    """Draining only ever starts (a worker never un-drains); recycling is draining with a reason."""

    def __init__(self) -> None:
        self.draining = False
        self.recycle_reason: str | None = None
        #: Set when draining starts; wakes a worker that sleeps before reconnecting.
        self.drain_started = asyncio.Event()
        self._listeners: list[Callable[[], None]] = []

    def drain(self) -> None:
        """Starts draining (idempotent) and tells the listeners (the connected session)."""
        if self.draining:
            return
        self.draining = True
        self.drain_started.set()
        for listener in list(self._listeners):
            listener()

    def recycle(self, reason: str) -> None:
        """Drains, and then the worker exits with WorkerRecycle; the first reason is kept."""
        if self.recycle_reason is None:
            self.recycle_reason = reason
            log.warning("%s: draining, then exiting so that a supervisor restarts the worker", reason)
        self.drain()

    def listen(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def unlisten(self, listener: Callable[[], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)
