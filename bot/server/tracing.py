"""A server span for each HTTP request (when tracing is on, see `core.tracing`): the root
of a Slack event's trace, and what a decision made over HTTP links to. A caller's W3C
`traceparent` header is continued, so a system that calls our REST API sees its own trace
go on in ours. Health probes and metrics scrapes are not traced: they would drown the rest."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core import tracing

log = logging.getLogger("cosmo.tracing")

UNTRACED = frozenset({"/healthz", "/readyz", "/metrics"})
_TRACEPARENT = b"traceparent"


#: (method or None for any, path template): the routes a span may be named after.
Templates = Callable[[], list[tuple[str | None, str]]]


class TracingMiddleware:
    def __init__(self, app: ASGIApp, templates: Templates) -> None:
        self.app = app
        self.templates = templates
        """Where the routes' templates come from, to name a span `POST /api/v1/sessions/
        {session_id}/chat` rather than by its path (ids in span names make every request a
        name of its own). We match them ourselves: middlewares further in pass copies of
        the scope on, so the route the app matched never comes back out to us."""
        self._compiled: list[tuple[str | None, str, re.Pattern[str]]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not tracing.enabled() or scope.get("path") in UNTRACED:
            await self.app(scope, receive, send)
            return
        method = str(scope.get("method") or "GET")
        given = dict(scope.get("headers") or []).get(_TRACEPARENT, b"")
        status = 500  # what the client gets if the app fails before answering

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        with tracing.span(
            method,
            kind="server",
            parent=given.decode("latin-1") or None,
            # The path, never the query: a content link carries its token there.
            attributes={"http.request.method": method, "url.path": scope.get("path")},
        ) as span:
            try:
                await self.app(scope, receive, send_status)
            finally:
                route = self._template(scope)
                if route is not None:
                    span.rename(f"{method} {route}")
                span.set({"http.route": route, "http.response.status_code": status})
                if status >= 500:
                    span.fail(str(status))

    def _template(self, scope: Scope) -> str | None:
        if self._compiled is None:
            try:
                templates = set(self.templates())
            except Exception:  # a span named by its method only beats a failed request
                log.warning("tracing: cannot list the routes; spans carry no route", exc_info=True)
                templates = set()
            # Literal segments first: `/agents/import` before `/agents/{agent}`.
            ordered = sorted(templates, key=lambda t: (t[1].count("{"), -len(t[1])))
            self._compiled = [(m, path, compile_path(path)[0]) for m, path in ordered]
        method, path = scope.get("method"), str(scope.get("path") or "")
        for allowed, template, pattern in self._compiled:
            if (allowed is None or allowed == method) and pattern.match(path):
                return template
        return None
