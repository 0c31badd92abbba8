"""The one exception type that ends an HTTP request before (or instead of) calling the RPC."""

from __future__ import annotations


class HttpError(Exception):
    """An HTTP error answered as `{"error": message}` with `status` (400, 404, 405, 413, ...)."""

    def __init__(self, status: int, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def bad_request(message: str) -> HttpError:
    return HttpError(400, message)
