"""Edit before approve in Slack, end to end: signed clicks and modal submissions to our
/slack/events, the real Bolt app, the fake Slack Web API, a real database.

A reviewer fixes the agent's draft in a modal built from the skill's schema; every copy of
the approval message moves to the new revision; a decision names the revision its message
showed, and a click on an older one is refused and pointed at the latest."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from core.skills.runtime import SkillResult
from tests.conftest import BACKENDS
from tests.fakes.anthropic_api import Reply
from tests.fakes.slack_api import BOT_USER_ID, CHANNEL_ID, USER_ID
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.slack_support import SlackApp, slack_app

LEAD = "U0LEAD0001"
PEER = "U0PEER0001"
APPROVALS = "C0APPROVE1"
SCHEMA = (
    "{type: object, properties: {"
    "to: {type: string, format: email, title: Recipient, description: Who gets it}, "
    "body: {type: string}, priority: {type: integer, minimum: 1, maximum: 5}, "
    "tone: {enum: [warm, formal]}}, required: [to, body]}"
)


def config(crm_url: str) -> str:
    return f"""
apiVersion: cosmo/v1
personas: [{{name: seller, role: Sales assistant}}]
skills:
  - name: send_email
    description: Send an email.
    kind: action
    is_automatable: true
    input_schema: {SCHEMA}
  - name: create_note
    description: Add a note in the CRM.
    kind: action
    is_automatable: true
    input_schema: {{type: object, properties: {{body: {{type: string}}}}, required: [body]}}
    executor:
      type: http
      method: POST
      url: "{crm_url}"
      body_template: {{note: "{{{{body}}}}", source: cosmo}}
agents:
  - name: sales-bot
    persona: seller
    skills: [send_email, create_note]
    approvers: [{LEAD}, {PEER}]
    approval_channel: {APPROVALS}
"""


SENT: list[dict[str, Any]] = []


async def send_email(arguments: dict[str, Any], ctx: Any) -> SkillResult:
    SENT.append(arguments)
    return SkillResult("sent", data={"id": len(SENT)})


@pytest.fixture
def crm() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(path="/api/notes") as receiver:
        yield receiver


@pytest.fixture
def app(real_db, tmp_path, crm):
    SENT.clear()
    with slack_app(
        real_db, tmp_path, config(crm.url), builtins={"send_email": send_email}
    ) as running:
        running.slack.add_user(LEAD, "Lena Lead")
        running.slack.add_user(PEER, "Pat Peer")
        yield running


def actions_block(message: Any) -> dict[str, Any] | None:
    return next((b for b in message.blocks if b["type"] == "actions"), None)


def propose(app: SlackApp, tool: str, arguments: dict[str, Any]) -> tuple[str, str, Any]:
    """The agent proposes; (output id, thread ts, the approval message in the thread)."""
    app.claude.push(Reply.tool_use(tool, arguments), Reply.text("Sent for review."))
    request = app.requests.app_mention(f"<@{BOT_USER_ID}> please {tool}")
    assert app.send(request).status_code == 200
    app.run_jobs()
    ts = request.payload["event"]["ts"]
    approval = next(
        m
        for m in app.slack.messages_in(CHANNEL_ID, thread_ts=ts)
        if m.ts != ts and actions_block(m)
    )
    return actions_block(approval)["elements"][0]["value"], ts, approval  # type: ignore[index]


def click(app: SlackApp, action_id: str, message: Any, ts: str, user: str = LEAD) -> dict[str, Any]:
    """A click on a button of `message` as it was shown (its block id names its revision)."""
    block = actions_block(message)
    assert block is not None
    request = app.requests.block_action(
        action_id,
        block["elements"][0]["value"],
        user=user,
        message_ts=message.ts,
        thread_ts=ts,
        block_id=block["block_id"],
    )
    assert app.send(request).status_code == 200
    app.run_jobs()
    return request.payload


def opened_view(app: SlackApp) -> dict[str, Any]:
    view = app.slack.last("views.open").params["view"]
    return view if isinstance(view, dict) else json.loads(view)


def submit_edit(
    app: SlackApp, view: dict[str, Any], values: dict[str, Any], user: str = LEAD
) -> Any:
    """Submit the Edit modal: `values` maps a property to its input's state."""
    state = {
        f"arg:{name}": {
            "value": value
            if isinstance(value, dict)
            else {"type": "plain_text_input", "value": value}
        }
        for name, value in values.items()
    }
    request = app.requests.view_submission(
        "output_edit_submit", state, user=user, private_metadata=view["private_metadata"]
    )
    response = app.send(request)
    assert response.status_code == 200, response.text
    app.run_jobs()
    return response


EMAIL = {"to": "ana@example.com", "body": "Helo Ana", "priority": 2, "tone": "warm"}
FIXED = {
    "to": "ana@example.com",
    "body": "Hello Ana",
    "priority": {"type": "number_input", "value": "2"},
    "tone": {"type": "static_select", "selected_option": {"value": '"warm"'}},
}


@pytest.mark.parametrize("real_db", BACKENDS, indirect=True)
def test_edit_opens_a_modal_prefilled_with_the_current_arguments(app):
    output_id, ts, approval = propose(app, "send_email", EMAIL)
    block = actions_block(approval)
    assert block is not None and block["block_id"] == f"decide:{output_id}:r1"
    assert [(e["action_id"], e["value"]) for e in block["elements"]] == [
        ("output_approve", output_id),
        ("output_reject", output_id),
        ("output_edit", output_id),
    ]

    click(app, "output_edit", approval, ts)

    view = opened_view(app)
    assert view["callback_id"] == "output_edit_submit"
    assert json.loads(view["private_metadata"]) == {
        "tenant": "default",
        "output_id": output_id,
        "revision": 1,
        "channel": CHANNEL_ID,
    }
    inputs = {b["block_id"]: b for b in view["blocks"] if b["type"] == "input"}
    assert list(inputs) == ["arg:to", "arg:body", "arg:priority", "arg:tone"]
    to = inputs["arg:to"]
    assert to["label"]["text"] == "Recipient" and to["hint"]["text"] == "Who gets it"
    assert to["optional"] is False and to["element"]["initial_value"] == "ana@example.com"
    assert inputs["arg:body"]["element"]["multiline"] is True
    assert inputs["arg:priority"]["optional"] is True
    assert inputs["arg:priority"]["element"]["initial_value"] == "2"
    assert inputs["arg:tone"]["element"]["initial_option"]["value"] == '"warm"'


@pytest.mark.parametrize("real_db", BACKENDS, indirect=True)
def test_an_invalid_edit_is_refused_on_its_fields_and_nothing_is_stored(app):
    output_id, ts, approval = propose(app, "send_email", EMAIL)
    click(app, "output_edit", approval, ts)
    view = opened_view(app)

    response = submit_edit(
        app,
        view,
        {**FIXED, "to": "not an address", "priority": {"type": "number_input", "value": "9"}},
    )

    answer = response.json()
    assert answer["response_action"] == "errors"
    assert set(answer["errors"]) == {"arg:to", "arg:priority"}
    assert "email" in answer["errors"]["arg:to"]
    assert "maximum" in answer["errors"]["arg:priority"] or "9" in answer["errors"]["arg:priority"]
    stored = app.container.outputs.get("default", output_id)
    assert stored.revision == 1 and stored.arguments == EMAIL and not stored.edits

    unchanged = submit_edit(app, view, {**FIXED, "body": "Helo Ana"})
    assert unchanged.json()["errors"] == {"arg:to": "the edit changes nothing"}
    assert app.container.outputs.get("default", output_id).revision == 1


@pytest.mark.parametrize("real_db", BACKENDS, indirect=True)
def test_a_valid_edit_makes_revision_2_and_every_copy_shows_it_with_the_diff(app):
    output_id, ts, approval = propose(app, "send_email", EMAIL)
    (channel_copy,) = [m for m in app.slack.messages_in(APPROVALS) if actions_block(m)]
    click(app, "output_edit", approval, ts)

    response = submit_edit(app, opened_view(app), FIXED)

    assert response.text == ""  # the modal closes
    stored = app.container.outputs.get("default", output_id)
    assert stored.revision == 2 and stored.arguments["body"] == "Hello Ana"
    assert stored.edits is not None and stored.edits[0].edited_by == LEAD
    assert stored.edits[0].identity == "verified"
    for channel, ts_ in ((CHANNEL_ID, approval.ts), (APPROVALS, channel_copy.ts)):
        shown = app.slack.message(channel, ts_)
        text = json.dumps(shown.blocks, ensure_ascii=False)
        assert "Revision 2" in text and f"edited by <@{LEAD}>" in text
        assert "*body*: `Helo Ana` → `Hello Ana`" in text
        block = actions_block(shown)
        assert block is not None and block["block_id"] == f"decide:{output_id}:r2"
    home = app.slack.home_view(PEER)
    assert home is not None and f"decide:{output_id}:r2" in json.dumps(home)


@pytest.mark.parametrize("real_db", BACKENDS, indirect=True)
def test_approve_on_the_edited_message_runs_the_edit_and_says_which_revision(app):
    output_id, ts, approval = propose(app, "send_email", EMAIL)
    click(app, "output_edit", approval, ts)
    submit_edit(app, opened_view(app), FIXED)
    edited = app.slack.message(CHANNEL_ID, approval.ts)

    click(app, "output_approve", edited, ts, user=PEER)

    assert SENT == [{**EMAIL, "body": "Hello Ana"}]
    output = app.container.outputs.get("default", output_id)
    assert output.status == "executed" and output.decision_revision == 2
    decided = app.slack.message(CHANNEL_ID, approval.ts)
    line = f"Approved by <@{PEER}> · rev 2 · sha256 {output.content_sha256[:8]}"
    assert {"type": "context", "elements": [{"type": "mrkdwn", "text": line}]} in decided.blocks
    assert actions_block(decided) is None


@pytest.mark.parametrize("real_db", BACKENDS, indirect=True)
def test_approve_on_the_old_message_is_refused_with_a_link_to_the_latest(app):
    output_id, ts, approval = propose(app, "send_email", EMAIL)
    click(app, "output_edit", approval, ts)
    submit_edit(app, opened_view(app), FIXED)

    click(app, "output_approve", approval, ts, user=PEER)  # the revision-1 buttons

    assert SENT == []
    output = app.container.outputs.get("default", output_id)
    assert output.status == "pending" and output.revision == 2
    (note,) = app.slack.ephemeral_messages(user=PEER)
    assert "edited since this message was posted" in note.text and "(revision 2)" in note.text
    link = app.slack.last("chat.getPermalink")
    assert link.params["message_ts"] == approval.ts
    assert f"/archives/{CHANNEL_ID}/p{approval.ts.replace('.', '')}" in note.text
    refused = [a for a in app.container.audit.for_output("default", output_id) if a.actor == PEER]
    assert [(a.action, a.outcome) for a in refused] == [("approve", "refused")]


@pytest.mark.parametrize("real_db", BACKENDS, indirect=True)
def test_a_click_without_a_revision_counts_as_revision_1(app):
    """Messages posted before buttons named their revision still decide revision 1, and are
    refused once the output was edited."""
    output_id, ts, approval = propose(app, "send_email", EMAIL)
    app.client.patch(
        f"/api/v1/outputs/{output_id}",
        json={"arguments": {**EMAIL, "body": "Hello Ana"}, "user_id": LEAD},
        headers={"Authorization": "Bearer test-token"},
    )
    app.run_jobs()
    legacy = app.requests.block_action(
        "output_approve",
        output_id,
        user=PEER,
        message_ts=approval.ts,
        thread_ts=ts,
        block_id=f"decide:{output_id}",
    )
    app.send(legacy)
    app.run_jobs()
    assert SENT == [] and app.container.outputs.get("default", output_id).status == "pending"
    assert "edited since" in app.slack.ephemeral_messages(user=PEER)[0].text


@pytest.mark.parametrize("real_db", BACKENDS, indirect=True)
def test_a_reject_reason_names_the_revision_it_was_opened_on(app):
    output_id, ts, approval = propose(app, "send_email", EMAIL)
    click(app, "output_reject", approval, ts, user=PEER)
    reason_view = opened_view(app)
    assert json.loads(reason_view["private_metadata"])["revision"] == "1"
    click(app, "output_edit", approval, ts)
    submit_edit(app, opened_view(app), FIXED)

    response = app.send(
        app.requests.view_submission(
            "output_reject_reason",
            {"reason": {"reason_input": "No emails this week"}},
            user=PEER,
            private_metadata=reason_view["private_metadata"],
        )
    )
    app.run_jobs()

    errors = response.json()["errors"]
    assert "revision 2 is current" in errors["reason"]
    assert app.container.outputs.get("default", output_id).status == "pending"

    click(app, "output_reject", approval, ts, user=PEER)  # again, on the old buttons
    assert "edited since" in app.slack.ephemeral_messages(user=PEER)[-1].text


@pytest.mark.parametrize("real_db", BACKENDS, indirect=True)
def test_a_stale_or_forbidden_edit_is_explained_and_stores_nothing(app):
    output_id, ts, approval = propose(app, "send_email", EMAIL)
    # The requester may not edit (or approve) their own output.
    click(app, "output_edit", approval, ts, user=USER_ID)
    (note,) = app.slack.ephemeral_messages(user=USER_ID)
    assert "someone else" in note.text
    assert app.slack.calls("views.open") == []

    click(app, "output_edit", approval, ts)
    first_form = opened_view(app)
    click(app, "output_edit", approval, ts, user=PEER)
    second_form = opened_view(app)
    submit_edit(app, second_form, FIXED, user=PEER)

    late = submit_edit(app, first_form, {**FIXED, "body": "Hi Ana"})

    errors = late.json()["errors"]
    assert "revision 2 is current" in next(iter(errors.values()))
    assert app.container.outputs.get("default", output_id).arguments["body"] == "Hello Ana"


@pytest.mark.parametrize("real_db", BACKENDS, indirect=True)
def test_the_request_approval_makes_is_shown_and_the_edited_one_is_sent(app, crm):
    output_id, ts, approval = propose(app, "create_note", {"body": "benign nte"})
    shown = json.dumps(approval.blocks, ensure_ascii=False)
    assert "Approving sends this request" in shown
    assert f"POST {crm.url}" in shown and '\\"note\\": \\"benign nte\\"' in shown

    click(app, "output_edit", approval, ts)
    submit_edit(app, opened_view(app), {"body": "benign note"})
    edited = app.slack.message(CHANNEL_ID, approval.ts)
    assert '\\"note\\": \\"benign note\\"' in json.dumps(edited.blocks, ensure_ascii=False)
    click(app, "output_approve", edited, ts, user=PEER)

    (call,) = crm.requests
    assert json.loads(call.body) == {"note": "benign note", "source": "cosmo"}
    assert app.container.outputs.get("default", output_id).status == "executed"
