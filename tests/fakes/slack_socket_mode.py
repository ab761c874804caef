"""A local stand-in for Slack's Socket Mode WebSocket server.

Slack's side of Socket Mode: `apps.connections.open` (called with the app-level token) returns
a `wss://` URL; the app connects, Slack says `hello`, then pushes envelopes
(`{"envelope_id", "type": "events_api" | "interactive" | "slash_commands", "payload", ...}`)
and expects each one acked with `{"envelope_id": ...}` (plus a `payload` for responses).

    with FakeSocketModeServer() as socket_server:
        fake_slack.serve_socket_mode(...)  # see `connections_open` below
        socket_server.wait_connected()
        envelope_id = socket_server.send_event(signed.payload)
        ack = socket_server.wait_for_ack(envelope_id)

Served by aiohttp on 127.0.0.1:<ephemeral> from its own thread and event loop, so the app
under test connects over a real socket exactly as it would to Slack.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.local_server import StartStop
from tests.fakes.slack_workspace import APP_ID, MethodCall, Refused, Workspace


class FakeSocketModeServer(StartStop):
    """Accepts Socket Mode connections, pushes envelopes, records acks."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-socket-mode")
        self._runner: web.AppRunner | None = None
        self._sockets: list[web.WebSocketResponse] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.acks: list[dict[str, Any]] = []
        self.connections = 0
        self.disconnections = 0
        self.port = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeSocketModeServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout=5)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    @property
    def url(self) -> str:
        """What `apps.connections.open` hands out (Slack's is `wss://wss-primary.slack.com/…`)."""
        return f"ws://127.0.0.1:{self.port}/link/?ticket={uuid.uuid4()}&app_id={APP_ID}"

    def connections_open(self, ws: Workspace, call: MethodCall) -> dict[str, Any]:
        """A `FakeSlackAPI` method handler for `apps.connections.open`: only app-level tokens
        (`xapp-`) may open a connection, as in Slack."""
        token = next((value for value, found in ws.tokens.items() if found is call.token), "")
        if not token.startswith("xapp-"):
            raise Refused("not_allowed_token_type")
        return {"url": self.url}

    # -- pushing envelopes -------------------------------------------------------------------

    def send(self, envelope_type: str, payload: Mapping[str, Any], **fields: Any) -> str:
        """Push one envelope to every open connection; returns its `envelope_id`."""
        envelope_id = fields.pop("envelope_id", None) or str(uuid.uuid4())
        envelope = {
            "envelope_id": envelope_id,
            "type": envelope_type,
            "payload": dict(payload),
            "accepts_response_payload": envelope_type != "events_api",
            **fields,
        }
        asyncio.run_coroutine_threadsafe(self._broadcast(envelope), self._loop).result(timeout=5)
        return envelope_id

    def send_event(
        self, payload: Mapping[str, Any], *, retry_attempt: int = 0, envelope_id: str = ""
    ) -> str:
        """An Events API callback (`payload` as Slack would POST it), optionally a redelivery."""
        return self.send(
            "events_api",
            payload,
            envelope_id=envelope_id,
            retry_attempt=retry_attempt,
            retry_reason="timeout" if retry_attempt else "",
        )

    # -- waiting -----------------------------------------------------------------------------

    def wait_connected(self, count: int = 1, timeout: float = 5.0) -> None:
        self._wait(lambda: self.connections >= count, timeout, f"{count} connection(s)")

    def wait_disconnected(self, count: int = 1, timeout: float = 5.0) -> None:
        self._wait(lambda: self.disconnections >= count, timeout, f"{count} disconnection(s)")

    def wait_for_ack(self, envelope_id: str, timeout: float = 5.0) -> dict[str, Any]:
        self._wait(
            lambda: any(a.get("envelope_id") == envelope_id for a in self.acks),
            timeout,
            f"an ack for {envelope_id}",
        )
        with self._lock:
            return next(a for a in self.acks if a.get("envelope_id") == envelope_id)

    def _wait(self, check: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not check():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"expected {what} within {timeout}s; acks: {self.acks}")
                self._changed.wait(left)

    # -- the server (its own loop) -------------------------------------------------------------

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_get("/link/", self._link)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        # Typed as asyncio.AbstractServer, which has no `sockets`; it is an asyncio.Server.
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def _link(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        with self._changed:
            self._sockets.append(ws)
            self.connections += 1
            self._changed.notify_all()
        await ws.send_str(
            json.dumps(
                {
                    "type": "hello",
                    "num_connections": len(self._sockets),
                    "debug_info": {"host": "fake-socket-mode", "approximate_connection_time": 3600},
                    "connection_info": {"app_id": APP_ID},
                }
            )
        )
        try:
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue
                with self._changed:
                    self.acks.append(json.loads(message.data))
                    self._changed.notify_all()
        finally:
            with self._changed:
                self._sockets.remove(ws)
                self.disconnections += 1
                self._changed.notify_all()
        return ws

    async def _broadcast(self, envelope: dict[str, Any]) -> None:
        with self._lock:
            sockets = list(self._sockets)
        if not sockets:
            raise AssertionError("no Socket Mode connection is open")
        for ws in sockets:
            await ws.send_str(json.dumps(envelope))
