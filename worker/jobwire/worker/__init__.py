"""The jobwire worker SDK: serve a jobwire endpoint's jobs with a Runpod-style handler.

```python
from jobwire.worker import run_worker

def handler(job):
    return {"echo": job["input"]}

run_worker(handler, endpoint="my-endpoint", server="jobwire:50051", key="jw_...")
```

Handlers port from `runpod.serverless` unchanged: functions, async functions, generators and async
generators; `progress_update(job, value)`; returning `{"error": ...}` or `{"refresh_worker": True}`.
The SDK talks to the server over one gRPC stream and never imports the server.
"""

from __future__ import annotations

from jobwire.worker._backoff import Backoff
from jobwire.worker._context import JobContext, context, progress_update
from jobwire.worker._entry import run_worker
from jobwire.worker._errors import JobCancelled, WorkerError, WorkerRecycle, WorkerRejected
from jobwire.worker._runner import Handler
from jobwire.worker._version import __version__
from jobwire.worker._worker import Worker, WorkerOptions

__all__ = [
    "Backoff",
    "Handler",
    "JobCancelled",
    "JobContext",
    "Worker",
    "WorkerError",
    "WorkerOptions",
    "WorkerRecycle",
    "WorkerRejected",
    "__version__",
    "context",
    "progress_update",
    "run_worker",
]
