"""Exponential backoff with full jitter, for reconnecting a broken stream."""

from __future__ import annotations

import asyncio
import math
import random as _random
from collections.abc import Awaitable, Callable

# Past this exponent the cap has long been reached; it keeps 2**n small.
_MAX_EXPONENT = 32


class Backoff:
    """Delays between reconnection attempts: `random() * min(cap, base * 2**n)` for the n-th retry.

    Full jitter spreads the reconnects of many workers after a server restart. `sleep` and `random`
    are injectable so that tests record delays instead of waiting them. `reset()` is called by the
    worker after each successful Welcome.
    """

    def __init__(
        self,
        *,
        base: float = 0.1,
        cap: float = 30.0,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        random: Callable[[], float] = _random.random,
    ) -> None:
        if base <= 0 or cap < base:
            raise ValueError("Backoff needs 0 < base <= cap")
        self.base = base
        self.cap = cap
        self._sleep = sleep
        self._random = random
        self._failures = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; counts one more failure."""
        ceiling = min(self.cap, math.ldexp(self.base, min(self._failures, _MAX_EXPONENT)))
        self._failures += 1
        return self._random() * ceiling

    async def wait(self) -> float:
        """Sleeps the next delay and returns it."""
        delay = self.next_delay()
        await self.sleep(delay)
        return delay

    async def sleep(self, delay: float) -> None:
        """Sleeps `delay` seconds with the injected `sleep`."""
        await self._sleep(delay)

    def reset(self) -> None:
        """Starts over from `base` (the connection worked)."""
        self._failures = 0
