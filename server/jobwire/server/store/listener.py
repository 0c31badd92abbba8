"""One LISTEN connection per process, outside the SQLAlchemy pool (LISTEN needs a pinned session).

Notifications are hints, never the only path: when the connection drops, `on_gap` tells the consumer
that some may have been lost, so it re-checks what it waits for; the consumer also re-checks on a slow
timer, so a lost notification delays work but never loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg

log = logging.getLogger("jobwire.listener")


class Listener:
    def __init__(
        self,
        dsn: str,
        channels: Sequence[str],
        on_notify: Callable[[str, str], None],
        on_gap: Callable[[], None],
        *,
        max_backoff: float = 5.0,
    ) -> None:
        self._dsn = dsn
        self._channels = tuple(channels)
        self._on_notify = on_notify
        self._on_gap = on_gap
        self._max_backoff = max_backoff
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    async def start(self) -> None:
        """Starts listening; returns once the first LISTEN is in place (or the first attempt failed)."""
        self._task = asyncio.create_task(self._run(), name="jobwire-listener")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connected.wait(), timeout=10)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _notify(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        self._on_notify(channel, payload)

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            lost = asyncio.Event()
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self._dsn, timeout=5)
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                for channel in self._channels:
                    await conn.add_listener(channel, self._notify)
                self.connected.set()
                backoff = 0.1
                await lost.wait()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the database is down or restarting: retry with backoff
                log.warning("LISTEN connection failed: %s; retrying in %.1fs", error, backoff)
            finally:
                self.connected.clear()
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await asyncio.shield(conn.close(timeout=2))
            self._on_gap()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff)
