"""`/metrics` after real traffic: the Slack end-to-end harness in process, and a real
`cosmo serve` whose supervised worker runs the turns (its values reach the serve's scrape)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from core.keys.roles import Role
from core.keys.service import KeySpec
from tests.conftest import AUTH, BACKENDS
from tests.e2e.test_server_process import buttons
from tests.fakes.anthropic_api import Reply
from tests.fakes.slack_api import BOT_USER_ID, CHANNEL_ID
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.metrics_support import Samples, parse, value
from tests.server_support import LEAD
from tests.slack_support import SlackApp, eventually, slack_app

AGENT = "metrics-bot"
CONFIG = f"""
apiVersion: cosmo/v1
personas: [{{name: seller, role: Sales assistant}}]
skills:
  - name: create_task
    description: Create a CRM task.
    kind: action
    is_automatable: true
    input_schema: {{type: object, properties: {{title: {{type: string}}}}, required: [title]}}
agents:
  - name: {AGENT}
    persona: seller
    skills: [create_task]
    approvers: [{LEAD}]
"""


async def create_task(arguments: dict[str, Any], ctx: Any) -> Any:
    from core.skills.runtime import SkillResult

    return SkillResult("task T-1 created")


@pytest.fixture
def app(real_db, tmp_path) -> Iterator[SlackApp]:
    with slack_app(real_db, tmp_path, CONFIG, {"create_task": create_task}) as running:
        running.slack.add_user(LEAD, "Lena Lead")
        yield running


def scrape(app: SlackApp) -> Samples:
    r = app.client.get("/metrics", headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return parse(r.text)


@pytest.mark.parametrize("real_db", BACKENDS, indirect=True)
def test_a_scrape_after_chat_approval_execution_and_webhook_counts_each_step(app):
    with WebhookReceiver() as receiver:
        r = app.client.patch(
            f"/api/v1/agents/{app.agent_id(AGENT)}",
            json={"webhook": {"url": receiver.url, "secret": "whsec_" + "A" * 32}},
            headers=AUTH,
        )
        assert r.status_code == 200, r.text
        kb = app.client.post("/api/v1/knowledge-bases", json={"name": "handbook"}, headers=AUTH)
        r = app.client.post(
            f"/api/v1/knowledge-bases/{kb.json()['id']}/documents",
            files={"file": ("refunds.md", b"# Refunds\n\nRefunds take 5 days.\n")},
            headers=AUTH,
        )
        assert r.status_code == 202, r.text
        app.slack.rate_limit("chat.postMessage", times=1, retry_after=0)
        app.claude.push(Reply.tool_use("create_task", {"title": "Call Globex"}), Reply.text("Ok."))
        mention = app.requests.app_mention(f"<@{BOT_USER_ID}> add a task")
        assert app.send(mention).status_code == 200

        waiting = scrape(app)  # the turn is queued, not yet run
        assert value(waiting, "cosmo_jobs_queued") >= 1
        assert value(waiting, "cosmo_slack_events_acked_total", kind="event") >= 1
        assert value(waiting, "cosmo_slack_ack_seconds_count", kind="event") >= 1

        app.run_jobs()
        ts = mention.payload["event"]["ts"]
        approval = next(m for m in app.slack.messages_in(CHANNEL_ID, thread_ts=ts) if buttons(m))
        output_id = buttons(approval)[0]["value"]
        click = app.requests.block_action(
            "output_approve", output_id, user=LEAD, message_ts=approval.ts, thread_ts=ts
        )
        assert app.send(click).status_code == 200
        app.run_jobs()
        app.client.portal.call(app.container.webhooks.run_once)
        eventually(lambda: len(receiver.requests) >= 3)
        search = app.client.get(
            "/api/v1/knowledge-bases/handbook/search", params={"q": "refunds"}, headers=AUTH
        )
        assert search.status_code == 200, search.text

    got = scrape(app)
    assert value(got, "cosmo_turns_total", agent=AGENT, outcome="completed") >= 1
    assert value(got, "cosmo_turn_duration_seconds_count", agent=AGENT) >= 1
    assert value(got, "cosmo_model_tokens_total", agent=AGENT, kind="output") > 0
    # The prompt is cached from the first call on (the fake caches like the API does).
    prompt = ("input", "cache_write", "cache_read")
    assert sum(value(got, "cosmo_model_tokens_total", agent=AGENT, kind=k) for k in prompt) > 0
    assert value(got, "cosmo_model_cost_usd_total", agent=AGENT) > 0
    assert value(got, "cosmo_slack_events_acked_total", kind="interaction") >= 1
    assert value(got, "cosmo_outputs", status="executed") >= 1
    assert value(got, "cosmo_decisions_total", via="slack", decision="approved") >= 1
    assert value(got, "cosmo_decision_latency_seconds_count", via="slack") >= 1
    assert value(got, "cosmo_executions_total", outcome="executed") >= 1
    assert value(got, "cosmo_webhook_deliveries_total", outcome="delivered", attempt="1") >= 3
    assert value(got, "cosmo_slack_api_calls_total", method="chat.postMessage") >= 1
    assert value(got, "cosmo_slack_api_rate_limited_total", method="chat.postMessage") >= 1
    assert value(got, "cosmo_knowledge_search_seconds_count") >= 1
    assert value(got, "cosmo_store_up") == 1
    # Bounded labels: no series is labelled with an output, user or session id.
    assert not any(output_id in str(labels) for _, labels in got)


def test_a_scrape_without_the_root_key_is_refused(app):
    _, tenant_admin = app.container.keys.create(
        "default", KeySpec(name="ops", role=Role.ADMIN), created_by="test"
    )
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {tenant_admin}"},  # metrics span every tenant
    ):
        r = app.client.get("/metrics", headers=headers)
        assert r.status_code == 401, headers
        assert "cosmo_" not in r.text
        assert r.headers["www-authenticate"] == "Bearer"


def test_metrics_off_serves_nothing(real_db, tmp_path):
    with slack_app(
        real_db, tmp_path, CONFIG, {"create_task": create_task}, COSMO_METRICS="off"
    ) as app:
        r = app.client.get("/metrics", headers=AUTH)
        assert r.status_code == 404
        assert "COSMO_METRICS" in r.json()["detail"]


def test_with_a_metrics_port_the_scrape_moves_there_without_a_token(real_db, tmp_path):
    import httpx

    from tests.cosmo_process import free_port

    port = free_port()
    with slack_app(
        real_db, tmp_path, CONFIG, {"create_task": create_task}, COSMO_METRICS_PORT=port
    ) as app:
        assert app.client.get("/metrics", headers=AUTH).status_code == 404
        r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30)
        assert r.status_code == 200
        assert value(parse(r.text), "cosmo_store_up") == 1
    with pytest.raises(httpx.TransportError):  # closed with the app
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
