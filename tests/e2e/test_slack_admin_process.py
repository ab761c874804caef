"""Configuring from Slack only, over a real `cosmo serve` process: a skill and an agent made
with `/agent skill new` and `/agent create` (user-group approvers, a webhook with its test
event), then a chat whose action a group member approves in the thread. No REST call."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from tests.cosmo_process import cosmo, cosmo_serve, embedded_env
from tests.fakes.anthropic_api import FakeAnthropicAPI, Reply
from tests.fakes.slack_api import BOT_TOKEN, BOT_USER_ID, CHANNEL_ID, FakeSlackAPI
from tests.fakes.slack_requests import SIGNING_SECRET, SlackRequests
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.slack_support import eventually

ADA = "U0ADA00001"  # workspace admin
LEAD = "U0LEAD0001"  # in the approvers' user group
LEADS = "S0LEADS001"
HOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class Slack:
    """Signed requests to the server's /slack/events, and what the fake Slack saw."""

    def __init__(self, base: str, fake: FakeSlackAPI) -> None:
        self.fake = fake
        self.requests = SlackRequests(SIGNING_SECRET)
        self.http = httpx.Client(base_url=base, timeout=30)

    def send(self, request: Any) -> httpx.Response:
        r = self.http.post("/slack/events", content=request.body, headers=request.headers)
        assert r.status_code == 200, r.text
        return r

    def command(self, text: str) -> None:
        url = self.fake.response_url(CHANNEL_ID, user=ADA)
        self.send(self.requests.slash_command("/agent", text, user=ADA, response_url=url))

    def open_form(self, text: str) -> dict[str, Any]:
        before = len(self.fake.calls("views.open"))
        self.command(text)
        calls = eventually(lambda: self.fake.calls("views.open")[before:], timeout=30)
        assert calls[0].ok, calls[0].response
        return dict(calls[0].response["view"])

    def submit(self, view: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
        request = self.requests.view_submission(
            view["callback_id"],
            {block: {block: state} for block, state in values.items()},
            user=ADA,
            private_metadata=view["private_metadata"],
            view_id=view["id"],
        )
        answer: dict[str, Any] = self.send(request).json()
        assert answer.get("response_action") == "update", answer
        return answer


def text(value: str | None) -> dict[str, Any]:
    return {"type": "plain_text_input", "value": value}


def select(value: str | None) -> dict[str, Any]:
    return {"type": "static_select", "selected_option": {"value": value} if value else None}


def multi(*values: str, kind: str = "multi_static_select") -> dict[str, Any]:
    return {"type": kind, "selected_options": [{"value": v} for v in values]}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Slack, FakeAnthropicAPI, WebhookReceiver, Any]]:
    with (
        FakeSlackAPI() as fake,
        FakeAnthropicAPI() as claude,
        WebhookReceiver() as hooks,
        WebhookReceiver(path="/api/tasks") as crm,
    ):
        fake.add_user(ADA, "ada", is_admin=True)
        fake.add_user(LEAD, "Lena Lead")
        fake.add_usergroup(LEADS, [LEAD], name="Sales leads", handle="leads")
        env = embedded_env(
            tmp_path / "data",
            COSMO_API_TOKEN="unused-token",
            COSMO_WEBHOOK_ALLOW_INSECURE="true",
            COSMO_SKILL_SECRETS="CRM_*,SALES_*",
            SLACK_BOT_TOKEN=BOT_TOKEN,
            SLACK_SIGNING_SECRET=SIGNING_SECRET,
            SLACK_API_URL=fake.base_url,
            ANTHROPIC_API_KEY="test-key",
            ANTHROPIC_BASE_URL=claude.base_url,
            CRM_TOKEN="Bearer crm-secret",
            SALES_HOOK_SECRET=HOOK_SECRET,
        )
        cosmo(env, "db", "upgrade")
        with cosmo_serve(env) as base:
            yield Slack(base, fake), claude, hooks, crm


def test_a_skill_and_an_agent_made_in_slack_chat_and_get_approved_without_rest(served):
    slack, claude, hooks, crm = served

    skill_form = slack.open_form("skill new")
    slack.submit(
        skill_form,
        {
            "name": text("create_task"),
            "description": text("Create a follow-up task in the CRM."),
            "kind": select("action"),
            "options": multi("is_automatable", kind="checkboxes"),
            "executor": select("http"),
            "http_method": select("POST"),
            "http_url": text(crm.url),
            "http_secret_headers": text("Authorization: CRM_TOKEN"),
            "http_body": text('{"title": "{{title}}", "source": "slack-made"}'),
            "field1_name": text("title"),
            "field1_type": select("string"),
            "fields_required": multi("1", kind="checkboxes"),
        },
    )

    agent_form = slack.open_form("create")
    groups = [o["value"] for o in _block(agent_form, "approver_groups")["element"]["options"]]
    assert groups == [LEADS]
    agent_values = {
        "name": text("sales-bot"),
        "persona": select("__new__"),
        "persona_role": text("Sales assistant"),
        "skills": multi("create_task"),
        "model": select("__default__"),
        "approvers": {"type": "multi_users_select", "selected_users": []},
        "approver_groups": multi(LEADS),
        "webhook_url": text(hooks.url),
        "webhook_secret_env": text("SALES_HOOK_SECRET"),
        "options": multi("memory_enabled", kind="checkboxes"),
    }
    click = slack.requests.view_action(
        "webhook_test",
        agent_form,
        {block: {block: state} for block, state in agent_values.items()},
        user=ADA,
    )
    slack.send(click)
    shown = eventually(lambda: slack.fake.calls("views.update"), timeout=30)[-1]
    assert "answered *200*" in json.dumps(shown.params["view"])
    test_event = Webhook(HOOK_SECRET).verify(
        hooks.requests[0].body, dict(hooks.requests[0].headers)
    )
    assert test_event["type"] == "webhook.test"
    slack.submit(agent_form, agent_values)

    slack.command("use sales-bot")
    eventually(
        lambda: any(
            "now answers" in c.params.get("text", "") for c in slack.fake.calls("response_url")
        ),
        timeout=30,
    )

    claude.push(
        Reply.tool_use("create_task", {"title": "Call Globex"}, text="On it."),
        Reply.text("I proposed the task; it is waiting for approval."),
    )
    mention = slack.requests.app_mention(f"<@{BOT_USER_ID}> add a task to call Globex")
    slack.send(mention)
    ts = mention.payload["event"]["ts"]

    def approval() -> Any:
        for m in slack.fake.messages_in(CHANNEL_ID, thread_ts=ts):
            if any(b["type"] == "actions" for b in m.blocks):
                return m
        return None

    message = eventually(approval, timeout=30)
    output_id = next(b for b in message.blocks if b["type"] == "actions")["elements"][0]["value"]
    slack.send(
        slack.requests.block_action(
            "output_approve", output_id, user=LEAD, message_ts=message.ts, thread_ts=ts
        )
    )

    done = eventually(
        lambda: [
            m for m in slack.fake.messages_in(CHANNEL_ID, thread_ts=ts) if m.text.startswith("✅")
        ],
        timeout=30,
    )
    assert "approved" in done[0].text
    (task,) = crm.requests
    assert json.loads(task.body) == {"title": "Call Globex", "source": "slack-made"}
    assert task.headers["authorization"] == "Bearer crm-secret"
    kinds = eventually(
        lambda: (
            sorted(json.loads(r.body)["type"] for r in hooks.requests[1:])
            if len(hooks.requests) >= 4
            else None
        ),
        timeout=30,
    )
    assert kinds == ["output.created", "output.decided", "output.executed"]


def _block(view: dict[str, Any], block_id: str) -> dict[str, Any]:
    return next(b for b in view["blocks"] if b.get("block_id") == block_id)
