"""Handlers to try jobwire with (`jobwire dev` runs `echo`), and to copy from."""

from __future__ import annotations

from typing import Any

from jobwire.worker._context import progress_update


def echo(job: dict[str, Any]) -> dict[str, Any]:
    """Returns the job's input as `{"echo": input}`, after reporting progress once."""
    progress_update(job, {"stage": "echoing"})
    return {"echo": job["input"]}
