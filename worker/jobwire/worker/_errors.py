"""The exceptions of the worker SDK, all under `WorkerError`."""

from __future__ import annotations

import grpc


class WorkerError(Exception):
    """The root of the SDK's exceptions.

    `code` and `details` are the gRPC status that caused it, when one did (otherwise `None` and "").
    """

    def __init__(self, message: str, *, code: grpc.StatusCode | None = None, details: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.details = details


class WorkerRejected(WorkerError):
    """The server refused the worker (a bad key, an unknown endpoint, an invalid Hello...).

    Retrying would be refused the same way, so `Worker.run()` raises this at once instead of reconnecting.
    """


class WorkerRecycle(WorkerError):
    """`Worker.run()` ended because the process should be restarted.

    Raised after the worker drained, either because a handler ignored a cancellation for longer than
    `stuck_after` (its thread cannot be killed and may hold the GPU) or because a handler returned
    `{"refresh_worker": True}`. A supervisor (systemd, Kubernetes, `python -m jobwire.worker`'s exit
    code 75) should start a fresh process.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"the worker must be restarted: {reason}")
        self.reason = reason


class JobCancelled(WorkerError):
    """Raised by `JobContext.raise_if_cancelled()` in a handler whose job was cancelled."""
