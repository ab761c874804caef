"""A server span for each HTTP request (when tracing is on, see `core.tracing`): the root
of a Slack event's trace, and what a decision made over HTTP links to. A caller's W3C
`traceparent` header is continued, so a system that calls our REST API sees its own trace
go on in ours. Health probes and metrics scrapes are not traced: they would drown the rest."""

from __future__ import annotations

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core import tracing

UNTRACED = frozenset({"/healthz", "/readyz", "/metrics"})
_TRACEPARENT = b"traceparent"


class TracingMiddleware:
    def __init__(self, app: ASGIApp, routes: list[BaseRoute]) -> None:
        self.app = app
        self.routes = routes
        """The app's routes, to name a span by its template (`/api/v1/outputs/{output_id}`):
        middlewares further in pass copies of the scope on, so the matched route never
        comes back out in ours."""

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
        for route in self.routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                path = getattr(route, "path", None)
                return path if isinstance(path, str) else None
        return None
