"""Approval messages people act on, end to end: signed Slack requests to our /slack/events,
the real Bolt app, the fake Slack Web API, REST sessions, a real database.

The message says what will run and who may approve it; approvers are @-mentioned in the
approval channel, DMed when there is none, and an output that reaches nobody says so
(`slack_status: unrouted`) instead of passing for delivered."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from tests.conftest import AUTH, BACKENDS
from tests.fakes.anthropic_api import Reply
from tests.fakes.slack_api import BOT_TOKEN, BOT_USER_ID, CHANNEL_ID, USER_ID
from tests.slack_support import SlackApp, slack_app

LEAD = "U0LEAD0001"
PEER = "U0PEER0001"
OUTSIDER = "U0OUTSIDE1"
LEADS = "S0LEADS001"
APPROVALS = "C0APPROVE1"
EMAIL_SCHEMA = (
    "{type: object, properties: {to: {type: string}, subject: {type: string}, "
    "body: {type: string}}, required: [to, body]}"
)


def config(*, approval_channel: str | None, approvers: list[str]) -> str:
    channel = f"approval_channel: {approval_channel}" if approval_channel else ""
    return f"""
apiVersion: cosmo/v1
personas: [{{name: seller, role: Sales assistant}}]
skills:
  - name: draft_email
    description: Draft an email.
    kind: action
    input_schema: {EMAIL_SCHEMA}
agents:
  - name: sales-bot
    persona: seller
    skills: [draft_email]
    approvers: [{", ".join(approvers)}]
    allow_self_approval: false
    {channel}
"""


@pytest.fixture
def make_app(real_db, tmp_path) -> Iterator[Any]:
    opened: list[Any] = []

    def start(*, approval_channel: str | None, approvers: list[str]) -> SlackApp:
        manager = slack_app(
            real_db,
            tmp_path,
            config(approval_channel=approval_channel, approvers=approvers),
            COSMO_CHAT_WAIT_SECONDS=0,
        )
        app = manager.__enter__()
        opened.append(manager)
        app.slack.add_user(LEAD, "Lena Lead")
        app.slack.add_user(PEER, "Pat Peer")
        app.slack.add_user(OUTSIDER, "Olly Outsider")
        app.slack.add_usergroup(LEADS, [PEER, LEAD])
        return app

    yield start
    for manager in reversed(opened):
        manager.__exit__(None, None, None)


EMAIL = {"to": "ana@example.com", "subject": "Renewal", "body": "Hi **Ana**"}


def actions(message: Any) -> dict[str, Any] | None:
    return next((b for b in message.blocks if b["type"] == "actions"), None)


def mrkdwn_of(message: Any) -> str:
    texts: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "mrkdwn":
                texts.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(message.blocks)
    return "\n".join(texts)


def propose_in_slack(app: SlackApp) -> tuple[str, str]:
    """The agent proposes an email in a Slack thread: (output id, thread ts)."""
    app.claude.push(Reply.tool_use("draft_email", EMAIL), Reply.text("Drafted it."))
    request = app.requests.app_mention(f"<@{BOT_USER_ID}> draft the renewal email")
    assert app.send(request).status_code == 200
    app.run_jobs()
    ts = request.payload["event"]["ts"]
    found = app.container.outputs.list("default", _all(), cursor=None, limit=10).items
    return found[-1].id, ts


def propose_over_rest(app: SlackApp) -> str:
    """A REST session of the agent proposes an email: the output id."""
    agent_id = app.agent_id("sales-bot")
    r = app.client.post(
        f"/api/v1/agents/{agent_id}/sessions", json={"user_id": USER_ID}, headers=AUTH
    )
    assert r.status_code == 201, r.text
    app.claude.push(Reply.tool_use("draft_email", EMAIL), Reply.text("Drafted it."))
    r = app.client.post(
        f"/api/v1/sessions/{r.json()['id']}/chat", json={"message": "draft it"}, headers=AUTH
    )
    assert r.status_code in (200, 202), r.text
    app.run_jobs()
    found = app.container.outputs.list("default", _all(), cursor=None, limit=10).items
    assert found, "the turn proposed nothing"
    return found[-1].id


def _all() -> Any:
    from core.outputs.port import OutputFilter

    return OutputFilter()


def messages_with_buttons(app: SlackApp, channel: str) -> list[Any]:
    return [m for m in app.slack.messages_in(channel) if actions(m)]


# -- what the message says ------------------------------------------------------------------


def test_the_approval_message_says_what_runs_who_asked_when_and_who_may_approve(make_app):
    app = make_app(approval_channel=APPROVALS, approvers=[LEAD, LEADS])
    output_id, ts = propose_in_slack(app)
    output = app.container.outputs.get("default", output_id)

    [posted] = messages_with_buttons(app, APPROVALS)
    shown = mrkdwn_of(posted)
    assert "*Draft email* · `draft_email` v1 · action, manual follow-up once approved" in shown
    assert f"for <@{USER_ID}> · <!date^{int(output.created_at.timestamp())}^" in shown
    assert f"rev 1 · sha256 {output.content_sha256[:8]}" in shown
    assert f"Who may approve: <@{LEAD}>, <!subteam^{LEADS}> · not the requester" in shown
    assert ">*To:* ana@example.com" in shown and "**" not in shown  # seen: `**To:**`
    # The approval channel's copy @-mentions the approvers; the thread's does not.
    assert posted.text.startswith(f"<@{LEAD}> <!subteam^{LEADS}> Approval needed")
    [in_thread] = [m for m in app.slack.messages_in(CHANNEL_ID, thread_ts=ts) if actions(m)]
    assert in_thread.text.startswith("Approval needed")
    assert app.container.outputs.get("default", output_id).slack_status == "posted"


def test_a_non_approver_is_told_who_may_decide_with_mentions(make_app):
    """Seen: the refusal showed a raw `U0LEAD` instead of a mention."""
    app = make_app(approval_channel=APPROVALS, approvers=[LEAD, LEADS])
    output_id, _ = propose_in_slack(app)
    [posted] = messages_with_buttons(app, APPROVALS)
    block = actions(posted)
    assert block is not None
    click = app.requests.block_action(
        "output_approve",
        output_id,
        user=OUTSIDER,
        channel=APPROVALS,
        message_ts=posted.ts,
        block_id=block["block_id"],
    )
    assert app.send(click).status_code == 200
    app.run_jobs()

    [told] = app.slack.ephemeral_messages(user=OUTSIDER)
    assert f"<@{LEAD}>" in told.text and f"<!subteam^{LEADS}>" in told.text
    assert "U0LEAD0001," not in told.text.replace(f"<@{LEAD}>", "")
    assert app.container.outputs.get("default", output_id).status == "pending"


# -- where it goes ------------------------------------------------------------------------------


@pytest.mark.parametrize("real_db", BACKENDS, indirect=True)
def test_without_an_approval_channel_each_approver_gets_a_dm_with_the_buttons(make_app):
    """Seen: a REST session's output was posted nowhere, yet reported `delivered`."""
    app = make_app(approval_channel=None, approvers=[LEAD, LEADS])
    output_id = propose_over_rest(app)

    opened = [c.params["users"] for c in app.slack.calls("conversations.open", ok=True)]
    assert sorted(opened) == sorted([LEAD, PEER])  # the group expanded, LEAD once
    dms = {user: messages_with_buttons(app, "D" + user[1:]) for user in (LEAD, PEER)}
    assert all(len(found) == 1 for found in dms.values()), dms
    body = app.client.get(f"/api/v1/outputs/{output_id}", headers=AUTH).json()
    assert body["slack_status"] == "dm"

    [dm] = dms[PEER]
    block = actions(dm)
    assert block is not None
    click = app.requests.block_action(
        "output_approve",
        output_id,
        user=PEER,
        channel=dm.channel,
        message_ts=dm.ts,
        block_id=block["block_id"],
    )
    assert app.send(click).status_code == 200
    app.run_jobs()

    assert app.container.outputs.get("default", output_id).status == "manual"
    for user in (LEAD, PEER):  # every DM copy shows the decision, without buttons
        [copy] = app.slack.messages_in("D" + user[1:])
        assert actions(copy) is None and f"by <@{PEER}>" in mrkdwn_of(copy)


@pytest.mark.parametrize("real_db", BACKENDS, indirect=True)
def test_with_neither_the_output_is_unrouted_and_said_to_be(make_app):
    app = make_app(approval_channel=None, approvers=[])
    output_id = propose_over_rest(app)

    assert app.slack.calls("chat.postMessage") == []
    body = app.client.get(f"/api/v1/outputs/{output_id}", headers=AUTH).json()
    assert body["slack_status"] == "unrouted"
    assert body["notification_status"] == "pending"  # the webhook's, as before
    listed = app.client.get("/api/v1/outputs", params={"slack_status": "unrouted"}, headers=AUTH)
    assert [o["id"] for o in listed.json()["items"]] == [output_id]
    none = app.client.get("/api/v1/outputs", params={"slack_status": "dm"}, headers=AUTH)
    assert none.json()["items"] == []

    ready = app.client.get("/readyz")
    assert ready.status_code == 200  # a warning, not a failure
    assert ready.json()["unrouted_outputs"] == 1
    assert ready.json()["status"] == "degraded"

    r = app.client.post(
        f"/api/v1/outputs/{output_id}/approve", json={"user_id": LEAD}, headers=AUTH
    )
    assert r.status_code == 200, r.text
    assert app.client.get("/readyz").json().get("unrouted_outputs", 0) == 0


def test_when_slack_refuses_every_post_the_output_says_failed_not_delivered(make_app):
    app = make_app(approval_channel=None, approvers=[LEAD])
    app.slack.fail("chat.postMessage", "channel_not_found")
    output_id = propose_over_rest(app)

    assert app.slack.calls("conversations.open", ok=True)  # the DM was opened, the post refused
    body = app.client.get(f"/api/v1/outputs/{output_id}", headers=AUTH).json()
    assert body["slack_status"] == "failed"


def test_the_fake_opens_dms_as_slack_documents(make_app):
    app = make_app(approval_channel=None, approvers=[LEAD])
    web = WebClient(token=BOT_TOKEN, base_url=app.slack.base_url)
    first = web.conversations_open(users=LEAD)
    again = web.conversations_open(users=LEAD)
    assert first["channel"]["id"] == again["channel"]["id"] and again["already_open"] is True
    assert (
        web.conversations_open(channel=first["channel"]["id"])["channel"]["id"]
        == (first["channel"]["id"])
    )
    for params, error in [
        ({}, "users_list_not_supplied"),  # slack_sdk refuses this itself: send it raw
        ({"users": "U0NOBODY01"}, "user_not_found"),
        ({"users": ",".join(f"U0LEAD{i:04}" for i in range(9))}, "too_many_users"),
    ]:
        with pytest.raises(SlackApiError) as refused:
            web.api_call("conversations.open", json=params)
        assert refused.value.response["error"] == error
