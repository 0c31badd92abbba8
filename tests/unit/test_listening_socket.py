"""The HTTP listening socket turns Nagle off: without it every response (headers, then body) waited for
a delayed ACK, about 40 ms a request (measured; see the commit that added this test)."""

from __future__ import annotations

import socket

from jobwire.server.app import _listening_socket


def test_http_socket_is_tcp_with_nodelay() -> None:
    sock = _listening_socket("127.0.0.1:0")
    try:
        assert sock.proto == socket.IPPROTO_TCP  # asyncio sets TCP_NODELAY on accepted sockets only then
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert sock.getsockname()[0] == "127.0.0.1"
    finally:
        sock.close()
