"""The gRPC channel to the server and the worker's credentials."""

from __future__ import annotations

import re

import grpc

MAX_MESSAGE_BYTES = 32 * 1024 * 1024

CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # Pings find a dead server (or a NAT that dropped the connection) within 30 s even while no job
    # runs; the server permits them every 10 s.
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # Each connection attempt gets a fresh channel and dials at once, so `Backoff` alone decides when
    # to retry: with the process-wide subchannel pool, a new channel would share the old connection's
    # gRPC-internal reconnect backoff (1 s and more) and fail fast until it expired.
    ("grpc.use_local_subchannel_pool", 1),
]

# "<scheme> <credentials>", as in "Bearer jw_..." (RFC 9110 auth-scheme is a token).
_HAS_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*\s+\S")


def authorization(key: str) -> str:
    """The `authorization` metadata value for a worker key: `Bearer <key>` unless it names a scheme."""
    key = key.strip()
    return key if _HAS_SCHEME.match(key) else f"Bearer {key}"


def open_channel(target: str, credentials: grpc.ChannelCredentials | None) -> grpc.aio.Channel:
    """A channel to `target` (host:port), with TLS when `credentials` are given."""
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
    return grpc.aio.secure_channel(target, credentials, options=CHANNEL_OPTIONS)
