"""The single mapping from domain errors to gRPC status codes and HTTP statuses."""

from __future__ import annotations

from typing import NoReturn

import grpc

from jobwire.server import errors
from jobwire.server.api.context import HTTP_STATUS_KEY, RETRY_AFTER_KEY, CallContext

# Most specific first: the first class an error is an instance of decides.
_STATUS: list[tuple[type[errors.JobwireError], grpc.StatusCode, int]] = [
    (errors.PayloadTooLarge, grpc.StatusCode.INVALID_ARGUMENT, 413),
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT, 400),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED, 401),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED, 403),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND, 404),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS, 409),
    (errors.InvalidState, grpc.StatusCode.FAILED_PRECONDITION, 400),
    (errors.RateLimited, grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE, 503),
]


def status_of(error: errors.JobwireError) -> tuple[grpc.StatusCode, int]:
    for cls, code, http_status in _STATUS:
        if isinstance(error, cls):
            return code, http_status
    return grpc.StatusCode.INTERNAL, 500


async def abort_with(context: CallContext, error: errors.JobwireError) -> NoReturn:
    """Ends the call with the error's status; the HTTP status rides along for the transcoder."""
    code, http_status = status_of(error)
    trailers: list[tuple[str, str]] = [(HTTP_STATUS_KEY, str(http_status))]
    if isinstance(error, errors.RateLimited):
        # The transcoder turns this trailer into HTTP's Retry-After header.
        trailers.append((RETRY_AFTER_KEY, str(error.retry_after_s)))
    await context.abort(code, error.message, trailing_metadata=tuple(trailers))
