"""The part of a gRPC call context that jobwire's handlers use.

Handlers are called by the grpc.aio server with its ServicerContext and by the HTTP transcoder with a
shim; both satisfy this protocol, so auth, validation and errors are written once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NoReturn, Protocol

import grpc

MetadataPairs = Sequence[tuple[str, str | bytes]]

#: Trailing metadata key with which a handler names the HTTP status of an error when the generic
#: gRPC-to-HTTP table would say something less precise (413 for a payload that is too large).
HTTP_STATUS_KEY = "jobwire-http-status"
#: Trailing metadata key with the seconds after which a refused call may be retried (HTTP Retry-After).
RETRY_AFTER_KEY = "retry-after"


class CallContext(Protocol):
    def invocation_metadata(self) -> MetadataPairs | None: ...

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: MetadataPairs = ()
    ) -> NoReturn: ...

    def time_remaining(self) -> float | None: ...


def metadata_value(context: CallContext, key: str) -> str | None:
    """The first value of a metadata key (keys are lower case), decoded, or None."""
    for name, value in context.invocation_metadata() or ():
        if name == key:
            return value.decode() if isinstance(value, bytes) else value
    return None
