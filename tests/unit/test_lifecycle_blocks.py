"""The approval message shows N-of-M progress and escalation; DMs escape what they quote."""

from __future__ import annotations

from datetime import UTC, datetime

from bot.slack import blocks
from bot.slack.lifecycle_blocks import approval_progress, reminder_text
from core.outputs.port import Approval, Output

NOW = datetime(2026, 12, 7, tzinfo=UTC)


def output(**fields) -> Output:
    values = {
        "id": "out_1",
        "tenant_id": "t",
        "agent_id": "a",
        "session_id": "s",
        "skill": "create_task",
        "is_automatable": True,
        "arguments": {"title": "x"},
        "content_type": "text/markdown",
        "content_sha256": "0" * 64,
        "content_size": 1,
        "preview": "x",
        "status": "pending",
        "created_at": NOW,
        "updated_at": NOW,
    }
    values.update(fields)
    return Output.model_validate(values)


def test_one_of_two_approvals_names_who_approved():
    out = output(
        approval_policy={"required_approvals": 2},
        approvals=[Approval(by="U0A", identity="verified", via="slack", revision=1, at=NOW)],
        approval_count=1,
    )

    assert approval_progress(out) == [
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "*1 of 2 approvals*: <@U0A>"}]}
    ]
    _, message = blocks.approval_message(out, agent_name="bot", content="x", content_url=None)
    assert message[-1] == approval_progress(out)[0]  # under the buttons


def test_an_escalated_output_names_its_new_approvers_and_a_plain_one_shows_nothing():
    escalated = output(approval_policy={"escalate_to": ["S0BACKUP", "U0B"]}, escalated_at=NOW)
    text = approval_progress(escalated)[0]["elements"][0]["text"]
    assert text == "Escalated to <!subteam^S0BACKUP>, <@U0B>"
    assert approval_progress(output()) == []


def test_a_reminder_escapes_the_agent_name_and_links_the_message():
    text = reminder_text(output(), "R&D <bot>", "https://x.slack.com/archives/C1/p1")
    assert "R&amp;D &lt;bot&gt;" in text
    assert "<https://x.slack.com/archives/C1/p1|the approval message>" in text
