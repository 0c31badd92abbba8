"""The event loop jobwire's processes run on: uvloop where it is installed, else asyncio's own.

The server is one event loop carrying gRPC, HTTP and every Postgres round trip, so the loop's own cost
is paid per message. In the benchmark's steady case (4 interleaved pairs) uvloop took the server from
0.49-0.54 to 0.42-0.53 ms of CPU per job and the run from 1,393-1,561 to 1,375-1,715 jobs/s (3 of the
4 pairs faster). uvicorn makes the same choice for its own loop (`loop="auto"`).

`JOBWIRE_EVENT_LOOP=asyncio` keeps asyncio's loop (for debugging with asyncio's tools, or a platform
without uvloop); `uvloop` insists on it; `auto` (the default) takes uvloop when it imports.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

CHOICES = ("auto", "uvloop", "asyncio")


def loop_factory(choice: str | None = None) -> LoopFactory:
    """The factory of the loop named by `choice` (default: $JOBWIRE_EVENT_LOOP, else auto)."""
    choice = (choice or os.environ.get("JOBWIRE_EVENT_LOOP") or "auto").lower()
    if choice not in CHOICES:
        raise ValueError(f"JOBWIRE_EVENT_LOOP must be one of {', '.join(CHOICES)}, not {choice!r}")
    if choice == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise
        return asyncio.new_event_loop
    return uvloop.new_event_loop
