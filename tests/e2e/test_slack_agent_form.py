"""The agent modal of `/agent create|edit` beyond the basics: user-group approvers picked
from `usergroups.list` and used when deciding, the model select, the webhook (saved, and a
signed test event to a local receiver), knowledge bases. Signed requests to our
/slack/events, the real Bolt app, the fake Slack Web API and a real database."""

from __future__ import annotations

import json
from typing import Any

import pytest
from standardwebhooks import Webhook

from core.knowledge.schemas import KnowledgeBaseSpec
from core.sessions.pricing import KNOWN_MODELS
from tests.e2e.test_slack_commands import (
    ADA,
    CONFIG,
    LEAD,
    agent_values,
    block,
    command,
    multi,
    opened_view,
    select,
    submit,
    text,
)
from tests.fakes.anthropic_api import Reply
from tests.fakes.slack_api import BOT_USER_ID, CHANNEL_ID
from tests.fakes.webhook_receiver import Reply as HookReply
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.slack_support import SlackApp, slack_app

OPS = "U0OPS00001"
OPS_GROUP = "S0OPS00001"
HOOK_SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk="


@pytest.fixture
def app(real_db, tmp_path, monkeypatch):
    monkeypatch.setenv("SALES_HOOK_SECRET", HOOK_SECRET)
    with slack_app(real_db, tmp_path, CONFIG, COSMO_SKILL_SECRETS="SALES_*") as running:
        running.slack.add_user(ADA, "ada", is_admin=True)
        running.slack.add_user(LEAD, "lena")
        running.slack.add_user(OPS, "otto")
        running.slack.add_usergroup("S0LEADS001", [LEAD], name="Sales leads", handle="leads")
        running.slack.add_usergroup(OPS_GROUP, [OPS], name="Ops", handle="ops")
        yield running


def edit_values(**changes: Any) -> dict[str, Any]:
    active = multi("memory_enabled", "is_active", kind="checkboxes")
    return agent_values(**({"name": text("sales-bot"), "options": active} | changes))


def view_after(app: SlackApp) -> dict[str, Any]:
    call = app.slack.last("views.update")
    assert call.ok, call.response
    return dict(call.response["view"])


def note(view: dict[str, Any]) -> str:
    return str(block(view, "webhook_test_result")["elements"][0]["text"])


# -- approvers: user groups ----------------------------------------------------------------


def test_user_group_approvers_are_picked_from_slack_saved_and_decide(app):
    command(app, "edit sales-bot", user=ADA)
    assert app.slack.last("usergroups.list").ok
    view = opened_view(app)
    picker = block(view, "approver_groups")["element"]
    assert [(o["value"], o["text"]["text"]) for o in picker["options"]] == [
        ("S0LEADS001", "@leads (Sales leads)"),
        (OPS_GROUP, "@ops (Ops)"),
    ]
    assert [o["value"] for o in picker["initial_options"]] == ["S0LEADS001"]

    saved = submit(
        app,
        view,
        edit_values(
            approvers={"type": "multi_users_select", "selected_users": []},
            approver_groups=multi(OPS_GROUP),
        ),
    )
    assert saved["response_action"] == "update", saved
    assert app.container.agents.get_by_name("default", "sales-bot").approvers == [OPS_GROUP]

    command(app, "use sales-bot", user=ADA)
    app.claude.push(Reply.tool_use("draft_email", {"to": "a@b.c", "body": "x"}), Reply.text("ok"))
    request = app.requests.app_mention(f"<@{BOT_USER_ID}> draft it")
    assert app.send(request).status_code == 200
    app.run_jobs()
    ts = request.payload["event"]["ts"]
    approval = next(
        m
        for m in app.slack.messages_in(CHANNEL_ID, thread_ts=ts)
        if any(b["type"] == "actions" for b in m.blocks)
    )
    output_id = next(b for b in approval.blocks if b["type"] == "actions")["elements"][0]["value"]

    for user in (LEAD, OPS):  # the old group's member may no longer decide; the new one may
        click = app.requests.block_action(
            "output_approve", output_id, user=user, message_ts=approval.ts, thread_ts=ts
        )
        assert app.send(click).status_code == 200
        app.run_jobs()
        status = app.container.outputs.get("default", output_id).status
        assert status == ("pending" if user == LEAD else "manual"), (user, status)  # approved


# -- model ---------------------------------------------------------------------------------


def test_the_model_is_chosen_from_the_priced_models_and_an_unknown_one_is_saved_with_a_warning(
    app,
):
    command(app, "create", user=ADA)
    view = opened_view(app)
    options = [o["value"] for o in block(view, "model")["element"]["options"]]
    assert options == ["__default__", *KNOWN_MODELS, "__other__"]

    created = submit(app, view, agent_values(model=select("claude-sonnet-4-5")))
    assert "pricing table" not in json.dumps(created)
    assert app.container.agents.get_by_name("default", "renewals-bot").model == "claude-sonnet-4-5"

    command(app, "edit renewals-bot", user=ADA)
    view = opened_view(app)
    assert block(view, "model")["element"]["initial_option"]["value"] == "claude-sonnet-4-5"
    empty = submit(app, view, edit_values(name=text("renewals-bot"), model=select("__other__")))
    assert set(empty["errors"]) == {"model_other"}

    other = submit(
        app,
        view,
        edit_values(
            name=text("renewals-bot"),
            model=select("__other__"),
            model_other=text("claude-sonet-9"),
        ),
    )
    assert other["response_action"] == "update"
    assert "not in the pricing table" in json.dumps(other["view"])
    assert app.container.agents.get_by_name("default", "renewals-bot").model == "claude-sonet-9"

    command(app, "edit renewals-bot", user=ADA)
    view = opened_view(app)
    assert block(view, "model")["element"]["initial_option"]["value"] == "__other__"
    assert block(view, "model_other")["element"]["initial_value"] == "claude-sonet-9"


# -- webhook -------------------------------------------------------------------------------


def click_test(app: SlackApp, view: dict[str, Any], url: str, variable: str | None) -> str:
    values = {
        "name": {"name": text("sales-bot")},
        "webhook_url": {"webhook_url": text(url)},
        "webhook_secret_env": {"webhook_secret_env": text(variable)},
    }
    request = app.requests.view_action("webhook_test", view, values, user=ADA, value="test")
    response = app.send(request)
    assert response.status_code == 200, response.text
    app.run_jobs()
    return note(view_after(app))


def test_send_test_event_signs_one_event_and_shows_the_receivers_status(app):
    command(app, "edit sales-bot", user=ADA)
    view = opened_view(app)

    with WebhookReceiver() as receiver:
        said = click_test(app, view, receiver.url, "SALES_HOOK_SECRET")
        assert "answered *200*" in said
        (received,) = receiver.requests
        event = Webhook(HOOK_SECRET).verify(received.body, dict(received.headers))
        assert event["type"] == "webhook.test"
        assert event["data"]["agentId"] == app.agent_id("sales-bot")

        receiver.then(HookReply.error(503))
        assert "answered *503*" in click_test(app, view, receiver.url, "SALES_HOOK_SECRET")

        refused = click_test(app, view, receiver.url, "DATABASE_URL")
        assert "DATABASE_URL" in refused and "answered" not in refused
        assert "Type the webhook URL" in click_test(app, view, "", "SALES_HOOK_SECRET")
        assert len(receiver.requests) == 2  # nothing sent without an allowed secret

    bad = click_test(app, view, "ftp://example.com/hook", "SALES_HOOK_SECRET")
    assert "https" in bad
    # The modal keeps its inputs (same block ids) and only the note changes.
    assert [b.get("block_id") for b in view_after(app)["blocks"]] == [
        b.get("block_id") for b in view["blocks"]
    ]
    assert app.container.agents.get_by_name("default", "sales-bot").webhook is None


def test_the_webhook_is_saved_with_a_secret_variable_through_the_rest_rules(app):
    command(app, "edit sales-bot", user=ADA)
    view = opened_view(app)

    no_secret = submit(app, view, edit_values(webhook_url=text("https://hooks.example.com/x")))
    assert set(no_secret["errors"]) == {"webhook_secret_env"}
    bad_url = submit(
        app,
        view,
        edit_values(
            webhook_url=text("ftp://hooks.example.com/x"),
            webhook_secret_env=text("SALES_HOOK_SECRET"),
        ),
    )
    assert set(bad_url["errors"]) == {"webhook_url"}
    not_allowed = submit(
        app,
        view,
        edit_values(webhook_url=text("http://127.0.0.1:9/x"), webhook_secret_env=text("PATH")),
    )
    assert set(not_allowed["errors"]) == {"webhook_secret_env"}
    assert app.container.agents.get_by_name("default", "sales-bot").webhook is None

    url = "http://127.0.0.1:9/hook"  # local receivers are allowed in these tests
    saved = submit(
        app, view, edit_values(webhook_url=text(url), webhook_secret_env=text("SALES_HOOK_SECRET"))
    )
    assert saved["response_action"] == "update", saved
    webhook = app.container.agents.get_by_name("default", "sales-bot").webhook
    assert webhook is not None
    assert (webhook.url, webhook.secret_env) == (url, "SALES_HOOK_SECRET")

    command(app, "edit sales-bot", user=ADA)
    again = opened_view(app)
    assert block(again, "webhook_url")["element"]["initial_value"] == url
    cleared = submit(app, again, edit_values(webhook_url=text(None)))
    assert cleared["response_action"] == "update"
    assert app.container.agents.get_by_name("default", "sales-bot").webhook is None


# -- knowledge bases -----------------------------------------------------------------------


def test_knowledge_bases_are_attached_and_detached_from_the_form(app):
    app.container.knowledge.create("default", KnowledgeBaseSpec(name="handbook"))
    command(app, "edit sales-bot", user=ADA)
    view = opened_view(app)
    assert [o["value"] for o in block(view, "knowledge_bases")["element"]["options"]] == [
        "handbook"
    ]

    submit(app, view, edit_values(knowledge_bases=multi("handbook")))
    assert app.container.agents.get_by_name("default", "sales-bot").knowledge_bases == ["handbook"]

    command(app, "edit sales-bot", user=ADA)
    view = opened_view(app)
    chosen = block(view, "knowledge_bases")["element"]["initial_options"]
    assert [o["value"] for o in chosen] == ["handbook"]
    submit(app, view, edit_values(knowledge_bases=multi()))
    assert app.container.agents.get_by_name("default", "sales-bot").knowledge_bases == []


def test_when_slack_will_not_list_user_groups_the_stored_ones_are_kept_and_said_so(app):
    app.slack.fail("usergroups.list", "missing_scope")
    command(app, "edit sales-bot", user=ADA)
    view = opened_view(app)
    assert all(b.get("block_id") != "approver_groups" for b in view["blocks"])
    assert "S0LEADS001" in block(view, "approvers")["hint"]["text"]

    saved = submit(
        app, view, edit_values(approvers={"type": "multi_users_select", "selected_users": [ADA]})
    )

    assert saved["response_action"] == "update"
    assert app.container.agents.get_by_name("default", "sales-bot").approvers == [ADA, "S0LEADS001"]
