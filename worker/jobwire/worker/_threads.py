"""Sync handlers in threads of their own, reporting to the event loop.

Daemon threads rather than an executor: a handler that ignores its cancellation cannot be killed, and
executor threads are joined at interpreter exit, so a stuck one would keep a recycling worker alive.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Finished:
    """What a function run in a thread did: returned `value`, or raised `error`."""

    value: object = None
    error: BaseException | None = None


def call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[..., object], *args: object) -> bool:
    """`loop.call_soon_threadsafe`, or False when the loop is closed (the worker is gone: nobody listens)."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        return False
    return True


def _settle(future: asyncio.Future[Finished], finished: Finished) -> None:
    if not future.done():  # its waiter may have been cancelled meanwhile
        future.set_result(finished)


def in_thread(function: Callable[[], object], name: str) -> asyncio.Future[Finished]:
    """Runs `function` in a new daemon thread, in a copy of the current context; never raises through."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Finished] = loop.create_future()
    ctx = contextvars.copy_context()

    def target() -> None:
        try:
            finished = Finished(value=ctx.run(function))
        except BaseException as exc:  # everything goes to the loop: an escaping error would be lost
            finished = Finished(error=exc)
        call_soon(loop, _settle, future, finished)

    threading.Thread(target=target, name=name, daemon=True).start()
    return future


_END = object()


class GeneratorPump:
    """Iterates a sync generator in a thread, handing its items to the loop (an async iterator).

    The thread asks for the next item only while neither `stop()` was called nor `cancelled()` is
    true, so a generator is stopped between yields; `finished` resolves when the thread is done.
    """

    def __init__(
        self, make: Callable[[], Iterator[object]], cancelled: Callable[[], bool], name: str
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._items: asyncio.Queue[object] = asyncio.Queue()
        self._stop = threading.Event()
        self._cancelled = cancelled
        self.finished = in_thread(lambda: self._pump(make), name)

    def stop(self) -> None:
        """Asks the thread to stop before the next item."""
        self._stop.set()

    def __aiter__(self) -> GeneratorPump:
        return self

    async def __anext__(self) -> object:
        item = await self._items.get()
        if item is _END:
            raise StopAsyncIteration
        if isinstance(item, _Raised):
            raise item.error
        return item

    def _pump(self, make: Callable[[], Iterator[object]]) -> None:
        iterator: Iterator[object] | None = None
        try:
            iterator = iter(make())
            while not (self._stop.is_set() or self._cancelled()):
                try:
                    item = next(iterator)
                except StopIteration:
                    break
                call_soon(self._loop, self._items.put_nowait, item)
        except BaseException as exc:
            call_soon(self._loop, self._items.put_nowait, _Raised(exc))
        finally:
            _close(iterator)
            call_soon(self._loop, self._items.put_nowait, _END)


@dataclass(frozen=True, slots=True)
class _Raised:
    error: BaseException


def _close(iterator: Iterator[object] | None) -> None:
    close = getattr(iterator, "close", None)
    if close is None:
        return
    try:
        close()  # runs the generator's finally blocks, in its own thread
    except Exception:  # a generator that yields while closing: nothing more to do for it
        return
