"""The fault proxy's close() leaves nothing open: not its event loop's self-pipe, not the sockets of
connections still open through it (a leak surfaced as a ResourceWarning in whichever later test
ran the garbage collector)."""

from __future__ import annotations

import gc
import socket
import time

import psutil

from shared.devtools.load.faultproxy import FaultProxy


def test_close_releases_every_socket_even_with_connections_open() -> None:
    gc.collect()
    before = psutil.Process().num_fds()
    with socket.create_server(("127.0.0.1", 0)) as upstream:
        proxy = FaultProxy(upstream.getsockname()[1])
        client = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        accepted, _ = upstream.accept()
        client.sendall(b"ping")
        accepted.settimeout(5)
        assert accepted.recv(4) == b"ping"
        proxy.set("blackhole")  # a handler stuck forwarding nothing
        time.sleep(0.1)
        proxy.close()
        client.close()
        accepted.close()
    del proxy
    gc.collect()
    assert psutil.Process().num_fds() == before
