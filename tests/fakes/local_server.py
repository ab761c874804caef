"""Running a fake's `ThreadingHTTPServer` in a background thread, and stopping it cleanly.

Shared by the fakes so each only says what it serves. Servers that track their handler
connections (`connections` + `connections_lock`) get idle keep-alive sockets shut down on
stop, so a stop never waits on a client that simply keeps its connection open.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from http.server import ThreadingHTTPServer


def serve_in_thread(server: ThreadingHTTPServer, name: str) -> threading.Thread:
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.005}, name=name, daemon=True
    )
    thread.start()
    return thread


def stop_serving(server: ThreadingHTTPServer, thread: threading.Thread | None) -> None:
    server.shutdown()
    lock = getattr(server, "connections_lock", None)
    connections: list[tuple[socket.socket, threading.Thread]] = []
    if lock is not None:
        with lock:
            connections = list(server.connections.items())  # type: ignore[attr-defined]
    for conn, _ in connections:  # idle keep-alive handlers would otherwise linger
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_RDWR)
    server.server_close()
    if thread is not None:
        thread.join(timeout=5)
    # Bounded, so a handler that never returns cannot hang a test suite's teardown.
    deadline = time.monotonic() + 2.0
    for _, handler in connections:
        handler.join(timeout=max(0.0, deadline - time.monotonic()))
