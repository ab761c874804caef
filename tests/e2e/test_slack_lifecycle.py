"""The approval lifecycle in Slack: signed clicks on the real Bolt app against the fake Web
API — 2-of-2 approvals shown as they come, and a grant made and revoked from the message."""

from __future__ import annotations

from typing import Any

import pytest

from core.approvals.lifecycle import REMIND
from tests.fakes.anthropic_api import Reply
from tests.fakes.slack_api import BOT_USER_ID, CHANNEL_ID
from tests.slack_support import SlackApp, slack_app

LEAD, SECOND = "U0LEAD0001", "U0SEC00002"
CONFIG = """
apiVersion: cosmo/v1
personas: [{name: seller, role: Sales assistant}]
skills:
  - name: draft_email
    description: Draft an email.
    kind: action
    grantable: true
    input_schema: {type: object, properties: {to: {type: string}}, required: [to]}
  - name: create_task
    description: Create a CRM task.
    kind: action
    executor: {type: builtin, function: draft_email}
    approval: {required_approvals: 2}
    input_schema: {type: object, properties: {title: {type: string}}, required: [title]}
agents:
  - name: sales-bot
    persona: seller
    skills: [draft_email, create_task]
    approvers: [U0LEAD0001, U0SEC00002]
"""


@pytest.fixture
def app(real_db, tmp_path):
    with slack_app(real_db, tmp_path, CONFIG, {}) as running:
        running.slack.add_user(LEAD, "Lena Lead")
        running.slack.add_user(SECOND, "Sam Second")
        yield running


def thread(app: SlackApp, ts: str) -> list[Any]:
    return [m for m in app.slack.messages_in(CHANNEL_ID, thread_ts=ts) if m.ts != ts]


def buttons(message: Any) -> list[dict[str, Any]]:
    return [e for b in message.blocks if b["type"] == "actions" for e in b["elements"]]


def text_of(message: Any) -> str:
    return " ".join(str(b) for b in message.blocks)


def propose(app: SlackApp, tool: str, arguments: dict[str, Any], ts: str | None = None):
    app.claude.push(Reply.tool_use(tool, arguments), Reply.text("Sent for review."))
    request = app.requests.app_mention(f"<@{BOT_USER_ID}> please {tool}", thread_ts=ts)
    assert app.send(request).status_code == 200
    ts = ts or request.payload["event"]["ts"]
    app.run_jobs()
    proposals = [m for m in thread(app, ts) if tool.replace("_", " ") in text_of(m).lower()]
    return ts, proposals[-1]


def click(app: SlackApp, action: str, value: str, user: str, message: Any, ts: str) -> None:
    request = app.requests.block_action(
        action, value, user=user, message_ts=message.ts, thread_ts=ts
    )
    assert app.send(request).status_code == 200
    app.run_jobs()


def test_two_of_two_shows_the_first_approval_and_decides_on_the_second(app):
    ts, approval = propose(app, "create_task", {"title": "Call Globex"})
    output_id = buttons(approval)[0]["value"]

    click(app, "output_approve", output_id, LEAD, approval, ts)

    def progress() -> str:
        return text_of(app.slack.message(CHANNEL_ID, approval.ts))

    assert "1 of 2 approvals*: <@U0LEAD0001>" in progress()
    assert app.container.outputs.get("default", output_id).status == "pending"
    click(app, "output_approve", output_id, LEAD, approval, ts)  # again: told, not counted
    told = app.slack.ephemeral_messages(user=LEAD)
    assert any("already approved revision 1" in e.text for e in told)

    click(app, "output_approve", output_id, SECOND, approval, ts)

    assert app.container.outputs.get("default", output_id).status == "manual"
    assert buttons(app.slack.message(CHANNEL_ID, approval.ts)) == []


def test_a_grant_from_the_message_approves_the_next_identical_proposal_until_revoked(app):
    ts, approval = propose(app, "draft_email", {"to": "ana@example.com"})
    output_id = buttons(approval)[0]["value"]
    assert [b["action_id"] for b in buttons(approval)][-1] == "output_approve_grant"

    click(app, "output_approve_grant", output_id, LEAD, approval, ts)

    decided = app.slack.message(CHANNEL_ID, approval.ts)
    assert "Allowed for this thread under <@U0LEAD0001>'s grant" in text_of(decided)
    revoke = [b for b in buttons(decided) if b["action_id"] == "grant_revoke"]
    assert len(revoke) == 1

    _, second = propose(app, "draft_email", {"to": "ana@example.com"}, ts=ts)
    assert "Auto-approved under <@U0LEAD0001>'s grant" in text_of(second)
    assert buttons(second) == []

    click(app, "grant_revoke", revoke[0]["value"], LEAD, decided, ts)
    assert "Grant revoked by <@U0LEAD0001>" in text_of(app.slack.message(CHANNEL_ID, approval.ts))

    _, third = propose(app, "draft_email", {"to": "ana@example.com"}, ts=ts)
    assert next(b["action_id"] for b in buttons(third)) == "output_approve"


def test_a_due_reminder_dms_only_the_approvers_still_to_approve_with_a_link(app):
    ts, approval = propose(app, "create_task", {"title": "Call Globex"})
    output_id = buttons(approval)[0]["value"]
    click(app, "output_approve", output_id, LEAD, approval, ts)

    # Made due now: the worker's clock is real (the injected-clock runs are in
    # tests/integration/test_approval_lifecycle.py).
    app.container.jobs.submit(
        tenant_id="default",
        kind=REMIND,
        key=f"{REMIND}:{output_id}:due-now",
        payload={"output_id": output_id, "round": 1},
    )
    app.run_jobs()

    def reminders(user: str) -> list[Any]:
        # Each approver's DM also holds the approval itself (no approval channel here).
        dm = app.slack.messages_in("D" + user[1:])
        return [m for m in dm if "still awaits your decision" in m.text]

    to_second = reminders(SECOND)
    assert len(to_second) == 1
    assert f"/archives/{CHANNEL_ID}/p{approval.ts.replace('.', '')}" in to_second[0].text
    assert reminders(LEAD) == []  # LEAD approved already


def test_a_grant_shows_in_the_granters_home_and_is_revoked_from_there(app):
    from tests.e2e.test_slack_commands import open_home
    from tests.e2e.test_slack_review_queue import home_action

    ts, approval = propose(app, "draft_email", {"to": "ana@example.com"})
    output_id = buttons(approval)[0]["value"]
    click(app, "output_approve_grant", output_id, LEAD, approval, ts)

    home = open_home(app, LEAD)
    revoke = [
        b["accessory"]
        for b in home["blocks"]
        if (b.get("accessory") or {}).get("action_id") == "grant_revoke"
    ]
    assert len(revoke) == 1
    assert "Grants you made" in str(home["blocks"]) or "Grants in force" in str(home["blocks"])
    assert (
        not [  # someone who made no grant and may not configure sees none
            b for b in open_home(app, SECOND)["blocks"] if "grant_revoke" in str(b)
        ]
    )

    home_action(app, LEAD, home, revoke[0], {})

    grant = app.container.grants.get("default", revoke[0]["value"])
    assert grant.revoked_by == LEAD
    assert "Grant revoked by <@U0LEAD0001>" in text_of(app.slack.message(CHANNEL_ID, approval.ts))
    republished = app.slack.home_view(LEAD) or {}
    assert "grant_revoke" not in str(republished["blocks"])
    _, again = propose(app, "draft_email", {"to": "ana@example.com"}, ts=ts)
    assert next(b["action_id"] for b in buttons(again)) == "output_approve"
