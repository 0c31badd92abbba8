"""What a running handler can ask about its job: `context()`, cancellation, and progress updates."""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from jobwire.worker._errors import JobCancelled
from jobwire.worker._outcome import dumps

log = logging.getLogger("jobwire.worker")

# Set in each job's task; threads started for sync handlers run in a copy of that task's context.
_current: contextvars.ContextVar[JobContext] = contextvars.ContextVar("jobwire_job")

# Running attempts by job id, for `progress_update(job, ...)` called from a thread the handler started
# itself, where the context variable is not set.
_running: dict[str, JobContext] = {}
_running_lock = threading.Lock()


class JobContext:
    """The running attempt of a job, as its handler sees it. Safe to use from any thread."""

    __slots__ = ("_attempt", "_cancelled", "_id", "_reason", "_send_progress")

    def __init__(self, job_id: str, attempt: int, send_progress: Callable[[bytes], None]) -> None:
        self._id = job_id
        self._attempt = attempt
        self._send_progress = send_progress
        self._cancelled = threading.Event()
        self._reason: str | None = None

    @property
    def id(self) -> str:
        """The job id (the same as `job["id"]`)."""
        return self._id

    @property
    def attempt(self) -> int:
        """Which attempt of the job this is, from 1."""
        return self._attempt

    @property
    def cancelled(self) -> bool:
        """True once the attempt was cancelled (by a client, a timeout, or a lost connection).

        Sync handlers should check it between steps and return (or call `raise_if_cancelled()`): their
        thread cannot be interrupted, and a handler that keeps running past `stuck_after` seconds makes
        the worker recycle.
        """
        return self._cancelled.is_set()

    @property
    def cancel_reason(self) -> str | None:
        """Why the attempt was cancelled: "CANCELLED", "TIMED_OUT", "DISCONNECTED"; None while it runs."""
        return self._reason

    def raise_if_cancelled(self) -> None:
        """Raises `JobCancelled` if the attempt was cancelled."""
        if self._cancelled.is_set():
            raise JobCancelled(f"job {self._id} attempt {self._attempt} was cancelled ({self._reason})")

    def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Blocks until the attempt is cancelled or `timeout` seconds passed; returns `cancelled`."""
        return self._cancelled.wait(timeout)

    def progress(self, value: object) -> None:
        """Sends a progress update (any JSON value); ignored once the attempt was cancelled."""
        data = dumps(value)
        if not self._cancelled.is_set():
            self._send_progress(data)

    def _cancel(self, reason: str) -> bool:
        """Marks the attempt cancelled; False if it already was."""
        if self._cancelled.is_set():
            return False
        self._reason = reason
        self._cancelled.set()
        return True

    def __repr__(self) -> str:
        return f"JobContext(id={self._id!r}, attempt={self._attempt}, cancelled={self.cancelled})"


def context() -> JobContext:
    """The `JobContext` of the job whose handler calls it (also in the handler's thread).

    Raises RuntimeError outside a handler.
    """
    try:
        return _current.get()
    except LookupError:
        raise RuntimeError("jobwire.worker.context() is only available inside a job handler") from None


def progress_update(job: Mapping[str, Any], progress: object) -> None:
    """Runpod's `progress_update(job, progress)`: sends a progress update for `job` (the handler's dict).

    Like Runpod's, it never raises for a job that is no longer running: the update is dropped.
    """
    ctx = _current.get(None)
    if ctx is None or ctx.id != job.get("id"):
        with _running_lock:
            ctx = _running.get(str(job.get("id")))
    if ctx is None:
        log.warning("progress_update for job %s, which is not running here: dropped", job.get("id"))
        return
    ctx.progress(progress)


def bind(ctx: JobContext) -> Callable[[], None]:
    """Makes `ctx` the current job of the calling task; returns the function that forgets it."""
    _current.set(ctx)
    with _running_lock:
        _running[ctx.id] = ctx

    def unbind() -> None:
        with _running_lock:
            if _running.get(ctx.id) is ctx:
                del _running[ctx.id]

    return unbind
