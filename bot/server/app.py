"""`create_app(settings)`: the composition of every HTTP surface into one ASGI app."""

from __future__ import annotations

import logging
import re
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from slack_bolt.adapter.starlette.async_handler import (
    to_async_bolt_request,
    to_starlette_response,
)

from bot.api import problems
from bot.api.problems import problem
from bot.api.routes import (
    agents,
    callbacks,
    grants,
    health,
    jobs,
    keys,
    knowledge,
    memory,
    outputs,
    personas,
    receipts,
    sessions,
    skills,
    usage,
    webhooks,
)
from bot.api.schemas import Problem
from bot.server import api_docs
from bot.server import metrics as metrics_http
from bot.server.body_limit import BodyLimitMiddleware, RouteBodyLimit
from bot.server.request_context import RequestContextMiddleware
from bot.server.supervisor import WorkerSupervisor
from bot.server.tracing import TracingMiddleware
from bot.slack import conversations
from bot.slack.app import SlackIntegration, build_slack
from bot.slack.socket_mode import start_socket_mode
from bot.slack.verification import SlackRequestGuard, verified_request
from bot.worker import build_worker
from core import metrics
from core.db.database import DATABASE_UNAVAILABLE, RETRY_AFTER_SECONDS
from core.settings import Settings
from core.wiring import Container, build_container

log = logging.getLogger("cosmo")
#: Every router of the HTTP API and health checks, in the order their routes match.
ROUTERS: tuple[APIRouter, ...] = (
    agents.router,
    personas.router,
    skills.router,
    sessions.router,
    memory.router,
    knowledge.router,
    usage.router,
    outputs.router,
    grants.router,
    receipts.router,
    receipts.authenticated,
    webhooks.router,
    keys.router,
    jobs.router,
    callbacks.router,
    health.router,
)


def create_app(
    settings: Settings | None = None,
    container: Container | None = None,
    *,
    background: bool = True,
    worker_processes: int = 0,
) -> FastAPI:
    """Build the app. `background` runs a job worker inside this process (tests, and
    embedded use); `worker_processes` supervises that many `cosmo worker` processes
    instead (`cosmo serve`). Tests pass a container wired to their own database, and may
    turn background work off to drive the jobs by hand."""
    settings = settings or (container.settings if container else Settings())
    owns_container = container is None
    container = container or build_container(settings)
    token, _generated = settings.api_token_value()
    slack = build_slack(container)
    worker = build_worker(container, slack) if background else None
    # Supervised workers keep their metric values in files here, for this process's scrape.
    workers_dir = (
        metrics_http.worker_dir(settings) if worker_processes and settings.metrics else None
    )
    supervisor = (
        WorkerSupervisor(
            worker_processes,
            grace=settings.worker_grace_seconds + 5,
            env={metrics.MULTIPROC_ENV: str(workers_dir)} if workers_dir else {},
        )
        if worker_processes
        else None
    )
    scrape = metrics_http.scrape_registry(container, workers_dir)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Socket Mode is a transport, not a background job: it runs even without workers.
        socket_mode = await start_socket_mode(slack, settings)
        app.state.socket_mode = socket_mode
        metrics_server = None
        if settings.metrics and settings.metrics_port is not None:
            metrics_server = metrics_http.start_port(settings, scrape)
        if worker is not None:
            await worker.start()
        if workers_dir is not None:
            metrics.prepare_worker_dir(workers_dir)
        if supervisor is not None:
            supervisor.start()
        try:
            yield
        finally:
            if supervisor is not None:
                await supervisor.stop()
            if workers_dir is not None:
                shutil.rmtree(workers_dir, ignore_errors=True)
            if metrics_server is not None:
                metrics_server.shutdown()
                metrics_server.server_close()
            if worker is not None:
                await worker.stop()
            if socket_mode is not None:
                await socket_mode.stop()
            if slack is not None:
                await slack.aclose()
            await container.aclose()
            if owns_container:
                container.close()

    app = FastAPI(
        title="Cosmo Agents API",
        version="1.0.0",
        summary="Configure Claude agents that work in Slack with a human in the loop.",
        description=(
            "All `/api/v1` routes need `Authorization: Bearer <key>`: a tenant key with a role "
            "(`reader`, `reviewer`, `admin`; each operation names the least role it needs, "
            "also as `x-cosmo-role`) or `COSMO_API_TOKEN`, the operator's root key, which "
            "reaches every tenant with every role (root-equivalent). Errors are "
            "`application/problem+json`. Request bodies are limited to `COSMO_MAX_BODY_BYTES` "
            "(default 1 MiB), documents uploaded to a knowledge base to "
            "`COSMO_MAX_UPLOAD_BYTES` (default 50 MiB); larger ones get 413. Select a tenant "
            "(Slack workspace) with `X-Cosmo-Tenant`; without it a tenant key acts on its own "
            "tenant and the root key on the default tenant. A tenant key naming another "
            "tenant gets 403."
        ),
        lifespan=lifespan,
        docs_url=None,  # ours, from local files (bot/server/api_docs.py)
        redoc_url=None,  # ReDoc exists only as a CDN script: not offered
    )
    app.state.container = container
    app.state.slack = slack
    app.state.api_token = token
    problems.install(app)

    # Slack's routes first: routes are matched in order, and `/slack/events` is the path that
    # must answer fastest (its ack window), behind a hundred REST routes it would match last.
    _mount_slack(app, slack)
    # The routers' own routes, shared by every app (see bot/api/routes/__init__.py).
    for router in ROUTERS:
        app.router.routes.extend(router.routes)
    metrics_http.install(app, settings, scrape, token)
    api_docs.install(app)
    _register_problem_schema(app)

    if slack is not None:
        # Added before the body limit, so the limit (outermost) refuses huge bodies first.
        app.add_middleware(SlackRequestGuard, signing_secret=slack.signing_secret)
    upload = RouteBodyLimit(
        "POST",
        re.compile(knowledge.UPLOAD_PATH),
        settings.max_upload_bytes + knowledge.UPLOAD_ENVELOPE_BYTES,
        knowledge.upload_limit_detail(settings.max_upload_bytes),
    )
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes, routes=[upload])
    # Outermost: even a request the body limit refuses has an id in its log lines.
    app.add_middleware(RequestContextMiddleware)
    # Around that: a request's span covers all of it (a no-op unless tracing is on).
    app.add_middleware(TracingMiddleware, templates=lambda: _route_templates(app))
    return app


def _mount_slack(app: FastAPI, slack: SlackIntegration | None) -> None:
    """`POST /slack/events`: events, interactivity and slash commands (one Request URL);
    `GET /slack/install` and `/slack/oauth_redirect` when workspaces install through OAuth."""

    async def slack_events(request: Request) -> Response:
        started = time.perf_counter()
        response = await _slack_request(request)
        if 200 <= response.status_code < 300:
            kind = verified_request(request).kind
            metrics.slack_acked(kind, time.perf_counter() - started)
        return response

    # A plain Starlette route, not a FastAPI one: it takes no parameters to validate and
    # has no schema, and FastAPI's dependency solving and response handling cost a request
    # 40-70 us in process, two to three times what a plain route does.
    app.router.add_route("/slack/events", slack_events, methods=["POST"], include_in_schema=False)

    async def _slack_request(request: Request) -> Response:
        if slack is None:
            return problem(
                503,
                "Slack not configured",
                "set SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET to enable the Slack app",
            )
        verified = verified_request(request)  # fails closed if the guard was not installed
        if verified.kind == "event" and conversations.is_message_event(verified.payload):
            # The hot path under a burst: one insert and the ack, without Bolt's dispatch.
            try:
                await conversations.take_event(slack.runtime, verified.payload)
            except DATABASE_UNAVAILABLE as exc:
                log.warning(
                    "database unavailable for a Slack event (%s); Slack will retry",
                    type(exc).__name__,
                )
                return Response(status_code=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
            return Response(status_code=200)
        body = verified.body
        if verified.kind == "command":
            # Bolt reads any form body containing "payload" as interactivity and drops
            # `/agent … payload …` commands; %70 decodes back to "p" for the listener.
            body = body.replace(b"payload", b"%70ayload")
        bolt_response = await slack.app.async_dispatch(to_async_bolt_request(request, body))
        return to_starlette_response(bolt_response)

    # Multi-workspace installs (bot/slack/oauth.py): the "Add to Slack" page and Slack's
    # redirect back. Plain GETs from a browser, so the Slack signature guard does not apply.
    def oauth_flow() -> Any:
        return slack.app.oauth_flow if slack is not None else None

    def oauth_off() -> Response:
        return problem(
            404,
            "Slack OAuth not configured",
            "set SLACK_CLIENT_ID, SLACK_CLIENT_SECRET and SLACK_SIGNING_SECRET to let "
            "workspaces install the app",
        )

    @app.get("/slack/install", include_in_schema=False)
    async def slack_install(request: Request) -> Response:
        flow = oauth_flow()
        if flow is None:
            return oauth_off()
        return to_starlette_response(
            await flow.handle_installation(to_async_bolt_request(request, b""))
        )

    @app.get("/slack/oauth_redirect", include_in_schema=False)
    async def slack_oauth_redirect(request: Request) -> Response:
        flow = oauth_flow()
        if flow is None:
            return oauth_off()
        return to_starlette_response(
            await flow.handle_callback(to_async_bolt_request(request, b""))
        )


def _route_templates(app: FastAPI) -> list[tuple[str | None, str]]:
    """Every route's path template with its method (None: any), for span names: the
    documented ones from the OpenAPI document, with their methods, and the undocumented
    ones (`/slack/events`, `/docs` and its assets, `/metrics`) with any method."""
    found: list[tuple[str | None, str]] = [
        (method.upper(), path)
        for path, operations in app.openapi().get("paths", {}).items()
        for method in operations
    ]
    for route in app.router.routes:
        path = getattr(route, "path", None)
        # A mount (the docs' assets) has no schema flag: it is undocumented too.
        if isinstance(path, str) and not getattr(route, "include_in_schema", False):
            found.append((None, path))
    return found


def _register_problem_schema(app: FastAPI) -> None:
    """Make `#/components/schemas/Problem` resolvable for the error responses."""
    original = app.openapi

    def openapi() -> dict[str, object]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        components = schema.setdefault("components", {})
        components.setdefault("schemas", {})["Problem"] = Problem.model_json_schema()
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
