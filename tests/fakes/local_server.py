"""Running a fake's `ThreadingHTTPServer` in a background thread, and stopping it cleanly.

Shared by the fakes so each only says what it serves. Servers that track their handler
connections (`TrackedHTTPServer`) get idle keep-alive sockets shut down on
stop, so a stop never waits on a client that simply keeps its connection open.

The base classes carry what the fakes have in common: `FakeHTTPServer` (the fake it serves,
on 127.0.0.1:<ephemeral>, quiet about clients that hang up), `TrackedHTTPServer` (plus its
live handler connections), `QuietHandler` (GET and POST go to `_serve`, nothing is logged),
`TrackedHandler` (registers its connection with a `TrackedHTTPServer`), `ServedFake`
(`start`/`stop`, `with` and `port` for the fake's public class) and `StartStop` (`with`).
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar, Generic, Self, TypeVar

F = TypeVar("F")


def serve_in_thread(server: ThreadingHTTPServer, name: str) -> threading.Thread:
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.005}, name=name, daemon=True
    )
    thread.start()
    return thread


def stop_serving(server: ThreadingHTTPServer, thread: threading.Thread | None) -> None:
    server.shutdown()
    connections: list[tuple[socket.socket, threading.Thread]] = []
    handlers: list[threading.Thread] = []
    if isinstance(server, TrackedHTTPServer):
        with server.connections_lock:
            connections = list(server.connections.items())
            # Also handlers whose connection just closed: they may not have returned yet.
            handlers = list(server.handler_threads)
    for conn, _ in connections:  # idle keep-alive handlers would otherwise linger
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_RDWR)
    server.server_close()
    if thread is not None:
        thread.join(timeout=5)
    # Bounded, so a handler that never returns cannot hang a test suite's teardown.
    deadline = time.monotonic() + 2.0
    for handler in handlers:
        handler.join(timeout=max(0.0, deadline - time.monotonic()))


class FakeHTTPServer(ThreadingHTTPServer, Generic[F]):
    """Serves `fake` on 127.0.0.1:<ephemeral>; errors in `ignored_errors` are not reported."""

    daemon_threads = True
    # Clients that hang up mid-request are normal (a test may stop reading early).
    ignored_errors: ClassVar[tuple[type[BaseException], ...]] = (ConnectionError,)

    def __init__(self, fake: F, handler: type[BaseHTTPRequestHandler]) -> None:
        self.fake = fake
        super().__init__(("127.0.0.1", 0), handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], self.ignored_errors):
            super().handle_error(request, client_address)


class TrackedHTTPServer(FakeHTTPServer[F]):
    """A `FakeHTTPServer` that knows its live handler connections, for `stop_serving`."""

    def __init__(self, fake: F, handler: type[BaseHTTPRequestHandler]) -> None:
        self.connections: dict[socket.socket, threading.Thread] = {}
        self.handler_threads: set[threading.Thread] = set()  # every handler not yet joined
        self.connections_lock = threading.Lock()
        super().__init__(fake, handler)


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 (keep-alive); GET and POST both go to `_serve`; nothing is logged."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        raise NotImplementedError

    def _send(
        self, status: int, content_type: str, data: bytes, headers: Mapping[str, str]
    ) -> None:
        """Answer with `status`, `data` as the body and `headers` after the content headers."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class TrackedHandler(QuietHandler):
    """Registers its connection with its `TrackedHTTPServer` while it serves it.

    With `thread_name` set, the handler thread is named `<thread_name>:<port>`.
    """

    thread_name: ClassVar[str | None] = None
    server: TrackedHTTPServer[Any]

    def setup(self) -> None:
        super().setup()
        thread = threading.current_thread()
        if self.thread_name is not None:
            thread.name = f"{self.thread_name}:{self.server.server_address[1]}"
        with self.server.connections_lock:
            self.server.connections[self.connection] = thread
            done = {t for t in self.server.handler_threads if not t.is_alive()}
            self.server.handler_threads -= done
            self.server.handler_threads.add(thread)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        with self.server.connections_lock:
            self.server.connections.pop(self.connection, None)


class StartStop:
    """`with fake:` starts the fake and stops it at the end."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ServedFake(StartStop):
    """`start`/`stop`, `with` and `port` for a fake served by a `FakeHTTPServer` from a thread.

    A subclass names its server and handler classes and its serving thread's name:
    `class FakeX(ServedFake, server=_Server, handler=_Handler, thread_name="fake-x")`, and
    sets `_stopping` (an `Event`, set while stopping) in its `__init__`.
    """

    server_class: ClassVar[type[FakeHTTPServer[Any]]]
    handler_class: ClassVar[type[BaseHTTPRequestHandler]]
    thread_name: ClassVar[str]
    _stopping: threading.Event
    _server: FakeHTTPServer[Any] | None = None
    _thread: threading.Thread | None = None

    def __init_subclass__(
        cls,
        *,
        server: type[FakeHTTPServer[Any]] | None = None,
        handler: type[BaseHTTPRequestHandler] | None = None,
        thread_name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        # Not given: inherited (a subclass of a fake serves like the fake).
        if server is not None:
            cls.server_class = server
        if handler is not None:
            cls.handler_class = handler
        if thread_name is not None:
            cls.thread_name = thread_name

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError(f"{type(self).__name__} is already running")
        self._stopping.clear()
        self._server = self.server_class(self, self.handler_class)
        self._thread = serve_in_thread(self._server, self.thread_name)
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        stop_serving(server, thread)
        self._server = None
        self._thread = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not running; call start() first")
        return int(self._server.server_address[1])
