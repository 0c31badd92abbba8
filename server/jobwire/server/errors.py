"""Domain errors of the jobwire server. Each maps to one gRPC status and one HTTP status in
`jobwire.server.api.errors`, the only place that knows about either.

    JobwireError
    ├── InvalidArgument        a request the service cannot accept as written
    │   └── PayloadTooLarge    a body or payload over the operation's limit
    ├── Unauthenticated        no key, or a key that is unknown, revoked or expired
    ├── PermissionDenied       a valid key without the role the call needs
    ├── NotFound               an endpoint or a job that does not exist (or no longer exists)
    ├── AlreadyExists          a name that is taken
    ├── InvalidState           the job is not in a state that allows the operation
    ├── RateLimited            a rate limit or the queue-size limit refused the call; retry later
    └── Unavailable            the database cannot be reached; the call may be retried

The docstrings are the default messages.
"""

from __future__ import annotations


class JobwireError(Exception):
    """jobwire could not complete the request."""

    def __init__(self, message: str | None = None) -> None:
        self.message = message or (type(self).__doc__ or "").strip()
        super().__init__(self.message)


class InvalidArgument(JobwireError):
    """The request is not valid."""


class PayloadTooLarge(InvalidArgument):
    """The request body is larger than this operation accepts."""


class Unauthenticated(JobwireError):
    """A valid API key is required: send `Authorization: Bearer KEY`."""


class PermissionDenied(JobwireError):
    """This API key may not perform this operation."""


class NotFound(JobwireError):
    """Not found."""


class AlreadyExists(JobwireError):
    """It already exists."""


class InvalidState(JobwireError):
    """The job is not in a state that allows this operation."""


class RateLimited(JobwireError):
    """Too many requests; try again later."""

    def __init__(self, message: str | None = None, *, retry_after_s: int = 1) -> None:
        super().__init__(message)
        #: Seconds after which the call may succeed (HTTP Retry-After).
        self.retry_after_s = retry_after_s


class Unavailable(JobwireError):
    """The job store is unavailable; try again."""
