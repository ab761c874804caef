"""A local webhook receiver that records what arrives and misbehaves on request.

Delivery tests need a receiver that can be down, slow, failing, rate limiting, gone or
redirecting, switched per request, and that keeps every request (headers and raw body)
for the test to inspect. It verifies nothing itself: tests check signatures with the
`standardwebhooks` reference library, as a real receiver would.

    with WebhookReceiver() as receiver:
        receiver.then(Reply.error(500), Reply.too_many(retry_after="7"))  # next two requests
        receiver.default = Reply.ok()                                     # everything after
        ...
        assert [r.webhook_id for r in receiver.requests] == [...]

Per request, the first queued `Reply` wins, then the `respond_with` callable, then
`default`. `Reply.down()` reads the request and hangs up without answering (the client sees
the connection drop); for "connection refused" use `refusing_port()`. Pass `ssl_context` to
serve https (the server name each client asked for is kept in `server_names`).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from tests.fakes.local_server import FakeHTTPServer, QuietHandler, ServedFake

Kind = Literal["answer", "down", "slow", "redirect"]


@dataclass(frozen=True)
class Reply:
    """How the receiver answers one request."""

    kind: Kind = "answer"
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0

    @classmethod
    def ok(cls, status: int = 200) -> Reply:
        return cls(status=status)

    @classmethod
    def error(cls, status: int = 500) -> Reply:
        return cls(status=status)

    @classmethod
    def too_many(cls, retry_after: str | None = "1") -> Reply:
        headers = (("Retry-After", retry_after),) if retry_after is not None else ()
        return cls(status=429, headers=headers)

    @classmethod
    def gone(cls) -> Reply:
        return cls(status=410)

    @classmethod
    def redirect(cls, location: str = "/elsewhere", status: int = 302) -> Reply:
        return cls(kind="redirect", status=status, headers=(("Location", location),))

    @classmethod
    def slow(cls, seconds: float = 2.0, status: int = 200) -> Reply:
        """Answer, but only after `seconds` (beyond the client's timeout)."""
        return cls(kind="slow", status=status, delay=seconds)

    @classmethod
    def down(cls) -> Reply:
        """Read the request, then close the socket without a response."""
        return cls(kind="down", status=0)


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    received_at: float = field(default_factory=time.monotonic)

    @property
    def webhook_id(self) -> str | None:
        return self.headers.get("webhook-id")


Responder = Callable[[ReceivedRequest], Reply]


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A local port whose connections are refused while the block runs: bound here and
    never listened on, so no other test's server can take it meanwhile. A port merely
    found free could be taken by one, which would then answer (200 to any path)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


class _Stopping(Exception):
    """Raised inside a slow reply so a stopping receiver does not wait it out."""


class _Server(FakeHTTPServer["WebhookReceiver"]):
    request_queue_size = 256  # the benchmark opens dozens of connections at once
    ignored_errors = (ConnectionError, ssl.SSLError, _Stopping)

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = super().get_request()
        context = self.fake.ssl_context
        if context is None:
            return conn, addr
        # The handshake happens in the handler thread, so a client that rejects our
        # certificate cannot stall the accept loop.
        return context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False), addr


class _Handler(QuietHandler):
    server: _Server

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()
        super().setup()

    def _serve(self) -> None:
        fake = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = ReceivedRequest(
            method=self.command,
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        reply = fake._record(request)
        if reply.kind == "down":
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if reply.kind == "slow" and fake._stopping.wait(reply.delay):
            raise _Stopping
        content = b"" if reply.status in (204, 304) else b"ok\n"
        self.send_response(reply.status)
        for name, value in reply.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)


class WebhookReceiver(
    ServedFake, server=_Server, handler=_Handler, thread_name="fake-webhook-receiver"
):
    """A recording webhook endpoint on 127.0.0.1:<ephemeral>, served from a thread."""

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None, path: str = "/hook") -> None:
        self.ssl_context = ssl_context
        self.path = path
        self.default = Reply.ok()
        self.server_names: list[str | None] = []
        self._respond_with: Responder | None = None
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._queue: deque[Reply] = deque()
        self._requests: list[ReceivedRequest] = []
        self._stopping = threading.Event()
        if ssl_context is not None:
            ssl_context.sni_callback = self._sni

    # -- lifecycle: start(), stop(), `with` and `port` come from ServedFake -------------

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}{self.path}"

    def url_for(self, host: str) -> str:
        """This receiver's URL under another host name (resolve it to 127.0.0.1 yourself)."""
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://{host}:{self.port}{self.path}"

    # -- scripting ----------------------------------------------------------------------

    def then(self, *replies: Reply) -> WebhookReceiver:
        """Answer the next requests with these replies, in order."""
        with self._lock:
            self._queue.extend(replies)
        return self

    def respond_with(self, responder: Responder | None) -> WebhookReceiver:
        """Decide each reply with a function (after queued replies run out)."""
        with self._lock:
            self._respond_with = responder
        return self

    # -- what arrived -------------------------------------------------------------------

    @property
    def requests(self) -> list[ReceivedRequest]:
        with self._lock:
            return list(self._requests)

    def hits_by_id(self) -> Counter[str | None]:
        return Counter(r.webhook_id for r in self.requests)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedRequest]:
        """Block until `count` requests have arrived; all of them."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self._requests) >= count, timeout):
                raise TimeoutError(f"{len(self._requests)} of {count} requests arrived")
            return list(self._requests)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()
            self._queue.clear()

    def _record(self, request: ReceivedRequest) -> Reply:
        with self._arrived:
            self._requests.append(request)
            self._arrived.notify_all()
            if self._queue:
                return self._queue.popleft()
            responder = self._respond_with
        if responder is not None:
            return responder(request)
        return self.default

    def _sni(self, sock: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        with self._lock:
            self.server_names.append(name)
