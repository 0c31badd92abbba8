"""The jobwire client helpers for gRPC: what the generated stubs (`jobwire.v1`) leave to the caller.

```python
import grpc
from jobwire.client import Submitter
from jobwire.v1 import job_pb2, jobs_pb2

async with grpc.aio.insecure_channel("jobwire:50051") as channel, Submitter(channel, "jw_...") as jobs:
    submission = job_pb2.JobSubmission(input=b'{"x": 1}')
    job = await jobs.submit(jobs_pb2.RunRequest(endpoint_id="my-endpoint", job=submission))
```

`Submitter` carries the submissions of many concurrent callers over one `RunStream` call: what queued up
while the last write was in flight leaves in the next one, so each job costs a share of a message
instead of a call of its own. Each caller still gets its own job back once it is committed, or its
own error.
"""

from __future__ import annotations

from jobwire.client._submitter import SubmissionRefused, Submitter

__all__ = ["SubmissionRefused", "Submitter"]
