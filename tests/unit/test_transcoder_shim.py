"""The call-context shim, header-to-metadata forwarding and the gRPC-to-HTTP status table."""

from __future__ import annotations

import grpc
import pytest

from jobwire.server.api.context import HTTP_STATUS_KEY, CallContext, metadata_value
from jobwire.server.api.transcoder import HttpError
from jobwire.server.api.transcoder.shim import CallShim, RpcAbort, metadata_from_headers, parse_timeout


def test_forwarded_headers_become_metadata() -> None:
    metadata, timeout = metadata_from_headers(
        [
            (b"host", b"h"),
            (b"authorization", b"Bearer KEY"),
            (b"authorization", b"KEY"),
            (b"idempotency-key", b"idem"),
            (b"x-request-id", b"rid"),
            (b"content-type", b"application/x-www-form-urlencoded"),
            (b"cookie", b"c=1"),
            (b"grpc-metadata-tenant", b"Acme"),
            (b"grpc-metadata-trace-bin", b"AP8"),
            (b"grpc-metadata-bad-bin", b"!"),
            (b"grpc-metadata-", b"empty key"),
        ]
    )
    assert metadata == [
        ("authorization", "Bearer KEY"),
        ("authorization", "KEY"),
        ("idempotency-key", "idem"),
        ("x-request-id", "rid"),
        ("tenant", "Acme"),
        ("trace-bin", b"\x00\xff"),
    ]
    assert timeout is None


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("5S", 5.0), ("100m", 0.1), ("2M", 120.0), ("1H", 3600.0), ("250u", 0.00025), ("7n", 7e-9)],
)
def test_grpc_timeout(value: str, seconds: float) -> None:
    assert parse_timeout(value) == pytest.approx(seconds)
    assert metadata_from_headers([(b"grpc-timeout", value.encode())])[1] == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "5", "S", "5s", "123456789S", "-1S", "1.5S"])
def test_bad_grpc_timeout_is_400(value: str) -> None:
    with pytest.raises(HttpError, match="grpc-timeout") as caught:
        parse_timeout(value)
    assert caught.value.status == 400


async def test_shim_is_a_call_context() -> None:
    shim: CallContext = CallShim([("authorization", "k")])
    assert metadata_value(shim, "authorization") == "k"
    assert shim.time_remaining() is None
    with pytest.raises(RpcAbort) as caught:
        await shim.abort(grpc.StatusCode.NOT_FOUND, "gone", trailing_metadata=((HTTP_STATUS_KEY, "410"),))
    assert caught.value.code == grpc.StatusCode.NOT_FOUND
    assert caught.value.details == "gone"
    assert caught.value.http_status == 410


def test_time_remaining_counts_down_from_the_timeout() -> None:
    remaining = CallShim((), 30.0).time_remaining()
    assert remaining is not None and 29.0 < remaining <= 30.0
    assert CallShim((), 0.0).time_remaining() == 0.0


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (grpc.StatusCode.CANCELLED, 499),
        (grpc.StatusCode.UNKNOWN, 500),
        (grpc.StatusCode.INVALID_ARGUMENT, 400),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
        (grpc.StatusCode.NOT_FOUND, 404),
        (grpc.StatusCode.ALREADY_EXISTS, 409),
        (grpc.StatusCode.PERMISSION_DENIED, 403),
        (grpc.StatusCode.UNAUTHENTICATED, 401),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
        (grpc.StatusCode.FAILED_PRECONDITION, 400),
        (grpc.StatusCode.ABORTED, 409),
        (grpc.StatusCode.OUT_OF_RANGE, 400),
        (grpc.StatusCode.UNIMPLEMENTED, 501),
        (grpc.StatusCode.INTERNAL, 500),
        (grpc.StatusCode.UNAVAILABLE, 503),
        (grpc.StatusCode.DATA_LOSS, 500),
        (grpc.StatusCode.OK, 500),  # aborting with OK is a bug of the handler
    ],
)
def test_status_table(code: grpc.StatusCode, status: int) -> None:
    assert RpcAbort(code, "x").http_status == status


@pytest.mark.parametrize(
    ("trailing", "status"),
    [
        (((HTTP_STATUS_KEY, "413"),), 413),
        (((HTTP_STATUS_KEY, b"413"),), 413),
        ((("other", "1"), (HTTP_STATUS_KEY, "413")), 413),
        (((HTTP_STATUS_KEY, "4x3"),), 400),
        (((HTTP_STATUS_KEY, "99"),), 400),
        (((HTTP_STATUS_KEY, "600"),), 400),
    ],
)
def test_handlers_may_name_the_http_status(
    trailing: tuple[tuple[str, str | bytes], ...], status: int
) -> None:
    assert RpcAbort(grpc.StatusCode.INVALID_ARGUMENT, "x", trailing).http_status == status
