"""Gives every HTTP request an id (the caller's `X-Request-ID` when it is sane, else a new
one), puts it in the log context for everything the request logs, echoes it back, and writes
the access line (`cosmo.access`) — ours rather than uvicorn's, so it carries the request id
and the tenant the request acted on."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.log_context import log_context

access = logging.getLogger("cosmo.access")

HEADER = b"x-request-id"
_SANE = re.compile(rb"^[A-Za-z0-9._:-]{1,64}$")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(HEADER, b"")
        request_id = given if _SANE.match(given) else uuid.uuid4().hex[:16].encode()

        status = 500  # what the client gets if the app fails before answering
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != HEADER]
                message = {**message, "headers": [*headers, (HEADER, request_id)]}
            await send(message)

        with log_context(request_id=request_id.decode()):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                # The path only: a query string may carry a content link's token.
                access.info(
                    "%s %s %d %.1fms",
                    scope.get("method", "-"),
                    scope.get("path", "-"),
                    status,
                    (time.perf_counter() - started) * 1000,
                )
