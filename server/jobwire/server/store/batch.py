"""Group commit: items that arrive while a write is in flight go to the database together, in the next
write, the way River and Oban batch job completions.

There is no timer. An item that finds the writer idle is written at once (no added latency); under load
each write carries everything that queued up during the previous round trip, so a stream of writes costs
one round trip (and one synchronous commit) per batch instead of one per item.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

I = TypeVar("I")  # noqa: E741 - the item, as in the other type variables' one-letter names
R = TypeVar("R")


class GroupCommit(Generic[I, R]):
    def __init__(
        self,
        write: Callable[[list[I]], Awaitable[list[R | Exception]]],
        key: Callable[[I], Hashable],
        max_items: int = 500,
    ) -> None:
        """`write` stores a batch and returns one result per item, in order (an exception for an item that
        failed on its own: it is raised to that item's caller). Items with the same `key`
        never share a batch (a later one waits for the next write, so it sees the earlier one's effect)."""
        self._write = write
        self._key = key
        self._max_items = max_items
        self._pending: list[tuple[I, asyncio.Future[R]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, item: I) -> R:
        """Queues the item for the next write and returns its result. The write does not depend on the
        caller: a caller that is cancelled leaves its item to be written all the same."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._run(), name="group-commit")
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(_consume)  # nobody awaits it any more: no "never retrieved" noise
            raise

    @property
    def busy(self) -> bool:
        """A write is in flight (what is submitted now waits for it and goes in the next one)."""
        return self._writer is not None and not self._writer.done()

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer

    def _take(self) -> list[tuple[I, asyncio.Future[R]]]:
        batch: list[tuple[I, asyncio.Future[R]]] = []
        rest: list[tuple[I, asyncio.Future[R]]] = []
        keys: set[Hashable] = set()
        for entry in self._pending:
            key = self._key(entry[0])
            if len(batch) < self._max_items and key not in keys:
                keys.add(key)
                batch.append(entry)
            else:
                rest.append(entry)
        self._pending = rest
        return batch

    async def _run(self) -> None:
        batch: list[tuple[I, asyncio.Future[R]]] = []
        try:
            while self._pending:
                batch = self._take()
                try:
                    results = await self._write([item for item, _ in batch])
                except Exception as error:  # every item of the batch fails alike; callers may retry
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                else:
                    for (_, future), result in zip(batch, results, strict=True):
                        if future.done():
                            continue
                        if isinstance(result, Exception):
                            future.set_exception(result)
                        else:
                            future.set_result(result)
                batch = []
        finally:
            # Cancelled (shutdown): nobody will write what is left.
            for _, future in [*batch, *self._pending]:
                if not future.done():
                    future.cancel()
            self._pending = []


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
