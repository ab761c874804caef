"""Refuse request bodies over a size limit before anything reads them into memory."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(HTTPException):
    """Raised by `receive` once a streamed body passes the limit.

    An `HTTPException` so that it reaches the app's problem+json handler as a 413: FastAPI
    turns any other exception raised while it reads a body into a 400.
    """

    def __init__(self, detail: str) -> None:
        super().__init__(413, detail)


def _limit_detail(max_bytes: int) -> str:
    return f"request bodies are limited to {max_bytes} bytes (COSMO_MAX_BODY_BYTES)"


@dataclass(frozen=True)
class RouteBodyLimit:
    """Another limit for one route (document uploads): `method` and a full-match `path`.

    `max_bytes` is what the middleware lets through; `detail` is the 413's message, which
    names the setting an operator changes.
    """

    method: str
    path: re.Pattern[str]
    max_bytes: int
    detail: str


class BodyLimitMiddleware:
    """413 for a declared or streamed body larger than `max_bytes` (or than the limit of
    the route in `routes` that the request is for).

    Checks `Content-Length` up front and counts streamed chunks too, so a chunked upload
    cannot slip past the header check.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, routes: Sequence[RouteBodyLimit] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.routes = tuple(routes)

    def _limit_for(self, scope: Scope) -> tuple[int, str]:
        method, path = scope.get("method", ""), scope.get("path", "")
        for route in self.routes:
            if route.method == method and route.path.fullmatch(path):
                return route.max_bytes, route.detail
        return self.max_bytes, _limit_detail(self.max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes, detail = self._limit_for(scope)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > max_bytes
            except ValueError:
                await self._reply(send, 400, "Bad Request", "Content-Length is not a number")
                return
            if too_big:
                await self._too_large(send, detail)
                return

        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > max_bytes:
                    raise BodyTooLarge(detail)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._too_large(send, detail)

    async def _too_large(self, send: Send, detail: str) -> None:
        await self._reply(send, 413, "Content Too Large", detail)

    @staticmethod
    async def _reply(send: Send, status: int, title: str, detail: str) -> None:
        body = json.dumps(
            {"type": "about:blank", "title": title, "status": status, "detail": detail}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/problem+json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
