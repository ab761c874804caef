"""Tracing for a `cosmo serve` or `cosmo worker` process: OpenTelemetry's SDK exporting over
OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set and the
`cosmo-agents[otel]` extra is installed; otherwise nothing is loaded and `core.tracing`
stays a no-op. The SDK reads the other standard variables itself (`OTEL_EXPORTER_OTLP_HEADERS`,
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_BSP_*`, `OTEL_TRACES_SAMPLER`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Literal
from urllib.parse import urlsplit

from core import tracing
from core.settings import Settings

log = logging.getLogger("cosmo.tracing")

Role = Literal["serve", "worker"]
INSTALL_HINT = "pip install 'cosmo-agents[otel]'"


def configure_tracing(settings: Settings, role: Role) -> Callable[[], None]:
    """Start exporting this process's spans; returns what flushes and stops it at exit."""
    endpoint = settings.otel_traces_endpoint()
    if endpoint is None:
        return _nothing
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but the OpenTelemetry SDK is not installed, "
            "so no traces are sent (%s)",
            INSTALL_HINT,
        )
        return _nothing
    resource = Resource.create(
        {
            "service.name": settings.otel_service_name,
            "service.version": _version(),
            "cosmo.process.role": role,
            "process.pid": os.getpid(),
        }
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    tracing.install(provider)
    log.info(
        "tracing: OTLP/HTTP to %s as service %s (%s)",
        _origin(endpoint),
        settings.otel_service_name,
        role,
    )

    def shutdown() -> None:
        tracing.uninstall()
        provider.shutdown()  # sends what is still buffered

    return shutdown


def _nothing() -> None:
    return None


def _origin(url: str) -> str:
    """Scheme, host and port only: a URL's user part or query may hold a credential."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def _version() -> str:
    try:
        return version("cosmo-agents")
    except PackageNotFoundError:  # pragma: no cover - run from a checkout without install
        return "unknown"
