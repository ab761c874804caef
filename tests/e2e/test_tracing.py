"""OpenTelemetry traces end to end: the whole Slack flow (mention → turn → model calls →
tool call → output proposed → approve click → execution → webhooks) recorded by the SDK's
in-memory exporter, and checked as one trace with its parents, links and GenAI attributes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from core import tracing
from core.skills.runtime import SkillResult
from core.tracing import PAYLOAD_KEY
from tests.fakes.anthropic_api import Reply
from tests.fakes.slack_api import BOT_USER_ID, CHANNEL_ID
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.slack_support import SlackApp, eventually, portal_of, slack_app

LEAD = "U0LEAD0001"
SECRET_TEXT = "Globex merger codename BLUEBIRD"
CONFIG = """
apiVersion: cosmo/v1
personas: [{name: seller, role: Sales assistant, instructions: "Help {{user_name}}."}]
skills:
  - name: create_task
    description: Create a CRM task.
    kind: action
    is_automatable: true
    input_schema: {type: object, properties: {title: {type: string}}, required: [title]}
agents:
  - name: sales-bot
    persona: seller
    skills: [create_task]
    approvers: [U0LEAD0001]
"""


async def create_task(arguments: dict[str, Any], ctx: Any) -> SkillResult:
    return SkillResult("task T-9 created", data={"id": "T-9"})


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        yield exporter
    finally:
        tracing.uninstall()
        provider.shutdown()


@pytest.fixture
def app(real_db, tmp_path, spans):
    with slack_app(real_db, tmp_path, CONFIG, {"create_task": create_task}) as running:
        running.slack.add_user(LEAD, "Lena Lead")
        yield running


def _one(found: list[ReadableSpan], name: str) -> ReadableSpan:
    named = [s for s in found if s.name == name]
    assert len(named) == 1, f"{name}: {[s.name for s in found]}"
    return named[0]


def _parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def _sid(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def _tid(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.trace_id)


def _approve(app: SlackApp, receiver: WebhookReceiver) -> tuple[str, str]:
    app.client.patch(
        f"/api/v1/agents/{app.agent_id('sales-bot')}",
        json={"webhook": {"url": receiver.url, "secret": "whsec_" + "A" * 32}},
        headers={"Authorization": "Bearer test-token"},
    )
    app.claude.push(
        Reply.tool_use("create_task", {"title": SECRET_TEXT}).with_options(output_tokens=37),
        Reply.text("Sent for review.").with_options(output_tokens=11),
    )
    request = app.requests.app_mention(f"<@{BOT_USER_ID}> please file {SECRET_TEXT}")
    assert app.send(request).status_code == 200
    ts = request.payload["event"]["ts"]
    app.run_jobs()
    approval = next(
        m
        for m in app.slack.messages_in(CHANNEL_ID, thread_ts=ts)
        if any(b["type"] == "actions" for b in m.blocks)
    )
    output_id = next(b for b in approval.blocks if b["type"] == "actions")["elements"][0]["value"]
    click = app.requests.block_action(
        "output_approve", output_id, user=LEAD, message_ts=approval.ts, thread_ts=ts
    )
    assert app.send(click).status_code == 200
    app.run_jobs()
    portal_of(app.client).call(app.container.webhooks.run_once)
    eventually(lambda: len(receiver.requests) >= 3)
    return ts, output_id


def test_a_turn_is_one_trace_from_the_slack_event_to_the_webhooks(app, spans):
    with WebhookReceiver() as receiver:
        _ts, output_id = _approve(app, receiver)
    found = list(spans.get_finished_spans())

    event = _one(found, "slack.event")
    trace_id = _tid(event)
    in_trace = [s for s in found if _tid(s) == trace_id]

    # The ack: the HTTP request's span, then the event taken (one durable insert).
    ack = next(s for s in in_trace if s.name == "POST /slack/events")
    assert ack.kind == SpanKind.SERVER and ack.parent is None
    assert _parent_of(event) == _sid(ack)
    assert event.attributes is not None and event.attributes["slack.event.type"] == "app_mention"

    # The worker continues it: the event job, the turn job it enqueued, the agent.
    event_job = _one(in_trace, "job slack.event")
    turn_job = _one(in_trace, "job slack.turn")
    agent = _one(in_trace, "invoke_agent sales-bot")
    assert event_job.kind == SpanKind.CONSUMER and _parent_of(event_job) == _sid(event)
    assert _parent_of(turn_job) == _sid(event_job)
    assert _parent_of(agent) == _sid(turn_job)

    # Two model calls, GenAI conventions, with the usage the turn recorded.
    model = app.container.settings.model
    calls = sorted(
        (s for s in in_trace if s.name == f"chat {model}"), key=lambda s: s.start_time or 0
    )
    assert len(calls) == 2 and all(_parent_of(c) == _sid(agent) for c in calls)
    turn = app.container.sessions.get_turn("default", str(agent.attributes["cosmo.turn.id"]))  # type: ignore[index]
    steps = [s for s in turn.steps if s["kind"] == "model"]
    for call, step in zip(calls, steps, strict=True):
        a = call.attributes
        assert a is not None and call.kind == SpanKind.CLIENT
        assert a["gen_ai.operation.name"] == "chat"
        assert a["gen_ai.provider.name"] == "anthropic"
        assert a["gen_ai.request.model"] == model
        assert a["gen_ai.usage.output_tokens"] == step["output_tokens"]
        assert a["gen_ai.usage.input_tokens"] == (
            step["input_tokens"] + step["cache_read_tokens"] + step["cache_write_tokens"]
        )
        assert a["gen_ai.usage.cache_read.input_tokens"] == step["cache_read_tokens"]
    assert [c.attributes["gen_ai.usage.output_tokens"] for c in calls] == [37, 11]
    assert calls[0].attributes["gen_ai.response.finish_reasons"] == ("tool_use",)
    assert agent.attributes["gen_ai.usage.output_tokens"] == 48  # type: ignore[index]

    # The tool call, and the output it proposed.
    tool = _one(in_trace, "execute_tool create_task")
    assert _parent_of(tool) == _sid(agent)
    assert tool.attributes is not None and tool.attributes["gen_ai.tool.name"] == "create_task"
    proposed = _one(in_trace, "output.propose")
    assert _parent_of(proposed) == _sid(tool)
    assert proposed.attributes is not None
    assert proposed.attributes["cosmo.output.id"] == output_id

    # The decision: a later request (the click, a trace of its own), linked; the decision
    # continues the proposal's trace.
    decide = _one(in_trace, "output.decide")
    assert _parent_of(decide) == _sid(proposed)
    clicks = [s for s in found if s.name == "POST /slack/events" and _tid(s) != trace_id]
    assert [link.context.span_id for link in decide.links] in [[_sid(c)] for c in clicks]
    assert decide.attributes is not None and decide.attributes["cosmo.decision"] == "approve"
    assert decide.attributes["cosmo.decision.via"] == "slack"

    # The execution in the worker, and every webhook delivery, in the same trace.
    execute_job = _one(in_trace, "job output.execute")
    execute = _one(in_trace, "output.execute")
    assert _parent_of(execute_job) == _sid(decide)
    assert _parent_of(execute) == _sid(execute_job)
    assert (
        execute.attributes is not None and execute.attributes["cosmo.output.status"] == "executed"
    )
    hooks = {s.name: s for s in in_trace if s.name.startswith("webhook ")}
    assert set(hooks) == {
        "webhook output.created",
        "webhook output.decided",
        "webhook output.executed",
    }
    assert _parent_of(hooks["webhook output.created"]) == _sid(proposed)
    assert _parent_of(hooks["webhook output.decided"]) == _sid(decide)
    assert _parent_of(hooks["webhook output.executed"]) == _sid(execute)
    assert all(h.attributes["cosmo.webhook.outcome"] == "delivered" for h in hooks.values())
    assert all(h.status.status_code != StatusCode.ERROR for h in hooks.values())

    # Never the conversation: no span or event attribute carries what the user wrote.
    for span in found:
        texts = [json.dumps(dict(span.attributes or {}), default=str)]
        texts += [json.dumps(dict(e.attributes or {}), default=str) for e in span.events]
        assert not any("BLUEBIRD" in t for t in texts), span.name
    # And the stored context stays out of what REST shows.
    shown = app.client.get(
        f"/api/v1/outputs/{output_id}", headers={"Authorization": "Bearer test-token"}
    )
    assert shown.status_code == 200 and PAYLOAD_KEY not in shown.json()


def test_a_malformed_stored_trace_context_starts_a_new_trace_instead_of_failing(app, spans):
    """A job payload is stored data: a traceparent that does not parse must not stop it."""
    jobs = app.container.jobs
    job_id, _ = jobs.submit(
        tenant_id="default",
        kind="api.turn",
        payload={"turn_id": "turn_gone", PAYLOAD_KEY: "00-zz-nope-01"},
    )
    app.run_jobs()
    job_span = _one(list(spans.get_finished_spans()), "job api.turn")
    assert job_span.parent is None
    assert job_span.attributes is not None
    assert job_span.attributes["cosmo.job.outcome"] == "dead"
    assert job_span.status.status_code == StatusCode.ERROR
    assert jobs.get("default", job_id).state == "dead"  # it ran: the turn is gone


def test_a_request_span_names_the_route_that_answers_its_method(app, spans):
    """`http.route` is the route that took the request: a method the path does not answer
    (405) names none, and the span keeps the method alone."""
    auth = {"Authorization": "Bearer test-token"}
    assert app.client.get("/api/v1/agents/sales-bot", headers=auth).status_code == 200
    assert app.client.put("/api/v1/agents/import", headers=auth).status_code == 405
    found = list(spans.get_finished_spans())
    served = _one(found, "GET /api/v1/agents/{agent}")
    assert served.attributes is not None
    assert served.attributes["http.route"] == "/api/v1/agents/{agent}"
    refused = _one(found, "PUT")
    assert refused.attributes is not None
    assert refused.attributes.get("http.route") is None
