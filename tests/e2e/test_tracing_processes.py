"""Traces over real processes: `cosmo serve --workers 0` and `cosmo worker` export to an
OTLP/HTTP receiver (`OTEL_EXPORTER_OTLP_ENDPOINT`), and a REST turn's spans from both
processes form one trace: the worker continues the request that enqueued the turn."""

from __future__ import annotations

import contextlib
import gzip
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.cosmo_process import cosmo, cosmo_serve, cosmo_worker
from tests.e2e.test_rest_turn_recovery import CONFIG, Api, environment
from tests.fakes.anthropic_api import FakeAnthropicAPI, Reply
from tests.fakes.local_server import FakeHTTPServer, QuietHandler, serve_in_thread, stop_serving


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    role: str
    service: str
    attributes: dict[str, Any]


class OtlpReceiver:
    """Decodes what the OTLP/HTTP exporter sends to `/v1/traces` (protobuf)."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.paths: list[str] = []
        self.lock = threading.Lock()
        self.server = FakeHTTPServer(self, _Handler)
        self.thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> OtlpReceiver:
        self.thread = serve_in_thread(self.server, "otlp-receiver")
        return self

    def __exit__(self, *exc: object) -> None:
        stop_serving(self.server, self.thread)

    def take(self, path: str, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        found = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    found.append(
                        ReceivedSpan(
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            role=str(resource.get("cosmo.process.role")),
                            service=str(resource.get("service.name")),
                            attributes={a.key: _value(a.value) for a in span.attributes},
                        )
                    )
        with self.lock:
            self.paths.append(path)
            self.spans += found

    def named(self, name: str) -> list[ReceivedSpan]:
        with self.lock:
            return [s for s in self.spans if s.name == name]


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


class _Handler(QuietHandler):
    server: FakeHTTPServer[OtlpReceiver]

    def _serve(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.server.fake.take(self.path, body)
        answer = ExportTraceServiceResponse().SerializeToString()
        self._send(200, "application/x-protobuf", answer, {})


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


@contextlib.contextmanager
def serving(env: dict[str, str]) -> Iterator[Api]:
    cosmo(env, "db", "upgrade")
    # Generous: other test processes share the CPU, and this one only cares about traces.
    with cosmo_serve(env, args=("--workers", "0"), ready_within=180) as base:
        api = Api(base)
        r = api.http.post(
            "/agents/import", content=CONFIG, headers={"Content-Type": "application/yaml"}
        )
        assert r.status_code == 200, r.text
        yield api


def wait_for(receiver: OtlpReceiver, name: str, limit: float = 60.0) -> ReceivedSpan:
    deadline = time.monotonic() + limit
    while not (found := receiver.named(name)):
        seen = sorted({(s.role, s.name) for s in receiver.spans})
        assert time.monotonic() < deadline, f"no span {name!r}; received {seen}"
        time.sleep(0.1)
    assert len(found) == 1, found
    return found[0]


def test_a_rest_turn_is_one_trace_across_serve_and_worker(tmp_path: Path, receiver):
    with FakeAnthropicAPI() as claude:
        claude.push(Reply.text("Traced across processes.").with_options(output_tokens=9))
        env = environment(
            tmp_path,
            claude,
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_BSP_SCHEDULE_DELAY="100",  # export within 0.1 s instead of 5 s
            COSMO_CHAT_WAIT_SECONDS="60",
            COSMO_EMBEDDER="hashing",  # starts faster; no knowledge in this test
        )
        with serving(env) as api, cosmo_worker(env, tmp_path / "worker.log"):
            session_id = api.session()
            r = api.chat(session_id, "hello", key="traced-1")
            assert r.status_code == 200, r.text

            served = wait_for(receiver, "POST /api/v1/sessions/{session_id}/chat")
            job = wait_for(receiver, "job api.turn")
            agent = wait_for(receiver, "invoke_agent durable-bot")
            call = wait_for(receiver, "chat claude-sonnet-4-6")

    assert set(receiver.paths) == {"/v1/traces"}
    assert (served.role, job.role) == ("serve", "worker")
    assert {served.service, job.service} == {"cosmo-agents"}
    # One trace: the worker's job continues the request that enqueued it.
    assert served.trace_id == job.trace_id == agent.trace_id == call.trace_id
    assert job.parent_id == served.span_id
    assert agent.parent_id == job.span_id and call.parent_id == agent.span_id
    assert call.attributes["gen_ai.request.model"] == "claude-sonnet-4-6"
    assert call.attributes["gen_ai.usage.output_tokens"] == 9
    assert call.attributes["gen_ai.usage.input_tokens"] > 0
