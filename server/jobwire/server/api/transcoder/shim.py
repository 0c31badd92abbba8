"""The call context of an RPC that arrived over HTTP, and the gRPC-to-HTTP status mapping.

Headers become metadata as grpc-gateway forwards them (research §1.7): `authorization` untouched,
`grpc-metadata-<key>` as `<key>`, plus the request-scoped headers jobwire reads (`idempotency-key`,
`x-request-id`). `grpc-timeout` sets the deadline.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Iterable
from typing import NoReturn

import grpc

from jobwire.server.api.context import HTTP_STATUS_KEY, RETRY_AFTER_KEY, MetadataPairs
from jobwire.server.api.transcoder.errors import bad_request

_FORWARDED = frozenset({b"authorization", b"idempotency-key", b"x-request-id"})
_GRPC_METADATA = b"grpc-metadata-"
_TIMEOUT = re.compile(r"([0-9]{1,8})([HMSmun])")
_TIMEOUT_UNIT = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}

# grpc-gateway's HTTPStatusFromCode, identical to Envoy's (research §1.4). Anything else is 500.
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}


class RpcAbort(Exception):
    """Raised by `CallShim.abort`: the RPC ended with a status other than OK."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing_metadata: MetadataPairs = ()) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata

    @property
    def http_headers(self) -> list[tuple[bytes, bytes]]:
        """Headers the trailers ask for: Retry-After of a refused call."""
        return [
            (b"retry-after", (value.encode() if isinstance(value, str) else value))
            for key, value in self.trailing_metadata
            if key == RETRY_AFTER_KEY
        ]

    @property
    def http_status(self) -> int:
        """The status the handler named in trailing metadata, else the table's."""
        for key, value in self.trailing_metadata:
            if key == HTTP_STATUS_KEY:
                text = value.decode() if isinstance(value, bytes) else value
                if text.isdigit() and 100 <= int(text) <= 599:
                    return int(text)
        return HTTP_STATUS.get(self.code, 500)


class CallShim:
    """A `CallContext` for the in-process call: metadata from headers, a deadline, abort by raising."""

    __slots__ = ("_deadline", "_metadata")

    def __init__(self, metadata: MetadataPairs = (), timeout: float | None = None) -> None:
        self._metadata = metadata
        self._deadline = None if timeout is None else time.monotonic() + timeout

    def invocation_metadata(self) -> MetadataPairs:
        return self._metadata

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: MetadataPairs = ()
    ) -> NoReturn:
        raise RpcAbort(code, details, trailing_metadata)

    def time_remaining(self) -> float | None:
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic())


def parse_timeout(value: str) -> float:
    """Seconds of a `grpc-timeout` value such as `5S` or `100m`; a 400 HttpError if malformed."""
    found = _TIMEOUT.fullmatch(value)
    if found is None:
        raise bad_request(f"invalid grpc-timeout header: {value!r}")
    return int(found.group(1)) * _TIMEOUT_UNIT[found.group(2)]


def metadata_from_headers(
    headers: Iterable[tuple[bytes, bytes]],
) -> tuple[list[tuple[str, str | bytes]], float | None]:
    """The metadata to forward and the timeout in seconds (None without `grpc-timeout`)."""
    metadata: list[tuple[str, str | bytes]] = []
    timeout = None
    for name, value in headers:
        if name in _FORWARDED:
            metadata.append((name.decode("latin-1"), value.decode("latin-1")))
        elif name.startswith(_GRPC_METADATA):
            key = name[len(_GRPC_METADATA) :].decode("latin-1").lower()
            if key.endswith("-bin"):
                try:
                    metadata.append((key, base64.b64decode(value + b"=" * (-len(value) % 4), validate=True)))
                except binascii.Error:
                    continue  # as grpc-gateway: an undecodable binary header is dropped
            elif key:
                metadata.append((key, value.decode("latin-1")))
        elif name == b"grpc-timeout":
            timeout = parse_timeout(value.decode("latin-1"))
    return metadata, timeout
