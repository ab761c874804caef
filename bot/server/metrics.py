"""`/metrics` for Prometheus: on the service's port behind the root key, or on
`COSMO_METRICS_PORT` without one; `COSMO_METRICS=off` serves neither.

The scrape is the serving process's own values, the supervised workers' (their files in
`worker_dir`, see `core.metrics`) and gauges read from the database at scrape time.
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest, start_http_server
from prometheus_client.metrics_core import Metric

from bot.api.problems import problem
from core import metrics
from core.concurrency import run_sync
from core.settings import Settings
from core.wiring import Container

log = logging.getLogger("cosmo.metrics")


def worker_dir(settings: Settings) -> Path:
    """Where the workers this `cosmo serve` supervises keep their values: one directory
    per serving process, so two on one data directory never read each other's."""
    return settings.cosmo_data_dir.resolve() / "metrics" / f"serve-{os.getpid()}"


class _ContainerFigures:
    def __init__(self, container: Container) -> None:
        self.container = container

    def outputs_by_status(self) -> dict[str, int] | None:
        return self.container.outputs.count_by_status()

    def jobs_by_kind(self) -> list[tuple[str, int, int, float]]:
        return self.container.jobs.stats_by_kind()


class _Scrape:
    """Everything one scrape reads, as one collector (so a plain registry can serve it)."""

    def __init__(self, container: Container | None, workers: Path | None) -> None:
        self.extra = [metrics.StoreCollector(_ContainerFigures(container))] if container else []
        self.workers = workers

    def collect(self) -> Iterable[Metric]:
        return metrics.merged(self.extra, self.workers)


def scrape_registry(container: Container | None, workers: Path | None = None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Scrape(container, workers))
    return registry


def start_port(settings: Settings, registry: CollectorRegistry) -> Any:
    """Serve `registry` on `COSMO_METRICS_PORT` (a thread); the server, to shut it down."""
    assert settings.metrics_port is not None
    server, _thread = start_http_server(settings.metrics_port, settings.host, registry)
    log.info("metrics on http://%s:%d/metrics", settings.host, settings.metrics_port)
    return server


def install(app: FastAPI, settings: Settings, registry: CollectorRegistry, token: str) -> None:
    """`GET /metrics` on the service's port, for the root key only: the figures span every
    tenant. With `COSMO_METRICS_PORT` set it answers 404 here (see `start_port`)."""
    expected = f"Bearer {token}".encode()

    @app.get("/metrics", include_in_schema=False)
    async def scrape(request: Request) -> Response:
        if not settings.metrics or settings.metrics_port is not None:
            where = (
                f"on port {settings.metrics_port}" if settings.metrics else "off (COSMO_METRICS)"
            )
            return problem(404, "Not found", f"metrics are served {where}")
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            refused = problem(
                401,
                "Unauthorized",
                "/metrics needs `Authorization: Bearer <COSMO_API_TOKEN>` (the root key)",
            )
            refused.headers["WWW-Authenticate"] = "Bearer"
            return refused
        body = await run_sync(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)
