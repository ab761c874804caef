"""`core.tracing` is a no-op until a process switches it on, works without OpenTelemetry
installed, and carries trace context as W3C `traceparent` strings; `configure_tracing`
switches it on only with an endpoint, and says so when the extra is missing."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bot.cli.tracing_setup import INSTALL_HINT, configure_tracing
from core import tracing
from core.secret_names import SecretNameRule
from core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    found = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(found))
    tracing.install(provider)
    try:
        yield found
    finally:
        tracing.uninstall()


def test_untraced_every_call_is_a_no_op():
    assert not tracing.enabled()
    with tracing.span("anything", parent="00-" + "1" * 32 + "-" + "2" * 16 + "-01") as span:
        span.set({"a": 1})
        span.fail("oops")
        assert span is tracing.NO_SPAN
        assert tracing.traceparent() is None
        assert tracing.with_trace({"turn_id": "t"}) == {"turn_id": "t"}


def test_without_the_otel_extra_the_service_runs_untraced():
    """The extra (the SDK and the exporter) is optional: without it (simulated: importing
    them fails) the traced code runs as before and an endpoint only earns a warning.
    (`opentelemetry-api` itself always comes with FastAPI and the anthropic SDK.)"""
    script = """
import logging, sys
class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.startswith(("opentelemetry.sdk", "opentelemetry.exporter")):
            raise ImportError("simulated: the otel extra is not installed")
        return None
sys.meta_path.insert(0, Absent())
logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(message)s")
from bot.cli.tracing_setup import configure_tracing
from bot.server import create_app
from core import tracing
from core.settings import Settings
stop = configure_tracing(Settings(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9"), "serve")
with tracing.span("x") as span:
    span.set({"k": "v"})
print(tracing.enabled(), tracing.with_trace({"a": 1}), tracing.traceparent())
stop()
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[-1] == "False {'a': 1} None"
    assert any(INSTALL_HINT in line for line in lines)


def test_a_span_stores_its_context_and_a_later_one_continues_it(exporter):
    with tracing.span("first") as first:
        stored = tracing.with_trace({"turn_id": "t"})
        assert stored["traceparent"] == first.traceparent == tracing.traceparent()
    # Elsewhere (another process, a later request): continue it, link the current span.
    with (
        tracing.span("request"),
        tracing.span("later", parent=stored["traceparent"], link_current=True),
    ):
        pass
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert spans["later"].context.trace_id == spans["first"].context.trace_id
    assert spans["later"].parent.span_id == spans["first"].context.span_id
    assert [link.context.span_id for link in spans["later"].links] == [
        spans["request"].context.span_id
    ]
    # A payload that carries a context keeps it (a retry keeps its first enqueuer's).
    assert tracing.with_trace(stored) == stored


@pytest.mark.parametrize(
    "stored",
    ["", "garbage", "00-" + "0" * 32 + "-" + "1" * 16 + "-01", "01-abc", "00-xyz-abc-01"],
)
def test_a_malformed_stored_context_starts_a_new_trace(exporter, stored):
    with tracing.span("job", parent=stored):
        pass
    (span,) = exporter.get_finished_spans()
    assert span.parent is None


def test_the_otlp_endpoint_settings_follow_opentelemetrys_rules():
    assert Settings().otel_traces_endpoint() is None
    base = Settings(OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4318/")
    assert base.otel_traces_endpoint() == "http://collector:4318/v1/traces"
    full = Settings(
        OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4318",
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="http://other:4318/custom",
    )
    assert full.otel_traces_endpoint() == "http://other:4318/custom"
    assert Settings().otel_service_name == "cosmo-agents"


def test_without_an_endpoint_nothing_is_switched_on():
    stop = configure_tracing(Settings(), "serve")
    assert not tracing.enabled()
    stop()


def test_with_an_endpoint_spans_are_exported_until_shutdown():
    stop = configure_tracing(Settings(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9"), "worker")
    try:
        assert tracing.enabled()
    finally:
        stop()
    assert not tracing.enabled()


def test_an_endpoint_without_the_sdk_is_a_warning_naming_the_extra(monkeypatch, caplog):
    # Simulated absence of the extra: importing the SDK fails.
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)
    with caplog.at_level(logging.WARNING, logger="cosmo.tracing"):
        stop = configure_tracing(
            Settings(OTEL_EXPORTER_OTLP_ENDPOINT="https://user:pw@collector:4318"), "serve"
        )
    stop()
    assert not tracing.enabled()
    assert INSTALL_HINT in caplog.text
    assert "pw" not in caplog.text


def test_skills_may_not_read_the_exporters_variables():
    """OTEL_EXPORTER_OTLP_HEADERS often holds a collector's API key."""
    refusal = SecretNameRule().refusal("OTEL_EXPORTER_OTLP_HEADERS")
    assert refusal is not None and "reserved" in refusal
