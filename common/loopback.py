"""Loopback ports and `GET`s for the processes fedsite starts for itself (tests, benchmarks).

Everything here binds or connects to 127.0.0.1 only: a server started to be measured or tested must
never be reachable from the network.
"""

from __future__ import annotations

import http.client
import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(port: int, path: str, timeout: float = 30.0) -> tuple[int, str]:
    """`GET path` on 127.0.0.1:port with the standard library: (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()
