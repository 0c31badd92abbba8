"""Group commit: items that arrive while a write is in flight go to the database together, in the next
write, the way River and Oban batch job completions.

There is no timer. An item that finds a writer free is written at once (no added latency); under load
each write carries everything that queued up while the writers were busy, so a stream of writes costs
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
        max_writes: int = 1,
    ) -> None:
        """`write` stores a batch and returns one result per item, in order (an exception for an item that
        failed on its own: it is raised to that item's caller). Items with the same `key` never share a
        batch nor are written concurrently (a later one waits for the write of the earlier one to end, so
        it sees its effect).

        Up to `max_writes` writes are in flight at once. One write at a time makes the biggest batches;
        a few overlap the round trips, which is what a latency-bound stream of writes needs (each round
        trip spends most of its time in the network, the commit's fsync and the event loops)."""
        self._write = write
        self._key = key
        self._max_items = max_items
        self._max_writes = max_writes
        self._pending: list[tuple[I, asyncio.Future[R]]] = []
        self._writers: set[asyncio.Task[bool]] = set()
        self._writing: set[Hashable] = set()
        self._starting = False
        self._closed = False

    async def submit(self, item: I) -> R:
        """Queues the item for the next write and returns its result. The write does not depend on the
        caller: a caller that is cancelled leaves its item to be written all the same."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._start_writes()
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(_consume)  # nobody awaits it any more: no "never retrieved" noise
            raise

    @property
    def busy(self) -> bool:
        """A write is in flight (what is submitted now may wait for it and go in the next one)."""
        return bool(self._writers)

    async def close(self) -> None:
        self._closed = True
        writers = list(self._writers)
        for writer in writers:
            writer.cancel()
        for writer in writers:
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        # Cancelled (shutdown): nobody will write what is left.
        for _, future in self._pending:
            if not future.done():
                future.cancel()
        self._pending = []
        self._closed = False  # a later submit starts afresh, as after a restart

    def _start_writes(self) -> None:
        # One writer at a time waits to start: when it runs, it takes everything submitted until then
        # (in the same turn of the event loop too), and the end of a write starts the next.
        if self._pending and not self._starting and len(self._writers) < self._max_writes:
            self._starting = True
            writer = asyncio.create_task(self._run(), name="group-commit")
            self._writers.add(writer)
            writer.add_done_callback(self._written)

    def _written(self, writer: asyncio.Task[bool]) -> None:
        self._writers.discard(writer)
        if writer.cancelled():
            self._starting = False  # cancelled before it ran
        # A writer that found nothing to take leaves what waits to the writes in flight (no spinning).
        elif writer.result() and not self._closed:
            self._start_writes()

    def _take(self) -> list[tuple[I, asyncio.Future[R]]]:
        batch: list[tuple[I, asyncio.Future[R]]] = []
        rest: list[tuple[I, asyncio.Future[R]]] = []
        keys: set[Hashable] = set()
        for entry in self._pending:
            key = self._key(entry[0])
            if len(batch) < self._max_items and key not in keys and key not in self._writing:
                batch.append(entry)
            else:
                rest.append(entry)
            keys.add(key)  # a later item of this key waits, even when this one waits too: order holds
        self._pending = rest
        self._writing.update(self._key(item) for item, _ in batch)
        return batch

    async def _run(self) -> bool:
        """Writes one batch; False when there was nothing it could take."""
        self._starting = False
        batch = [] if self._closed else self._take()
        if not batch:
            return False  # what waits has keys being written: the end of those writes starts it
        self._start_writes()  # another writer may take what comes meanwhile
        try:
            results = await self._write([item for item, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
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
        finally:
            self._writing.difference_update(self._key(item) for item, _ in batch)
        return True


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
