"""`/agent history|rollback|delete|outputs|audit` end to end: signed slash commands and
button clicks to our /slack/events, the fake Slack Web API, a real database."""

from __future__ import annotations

import json
from typing import Any

import pytest

from core.outputs.port import OutputFilter, OutputStatus
from core.schemas.agent import AgentPatch
from tests.fakes.anthropic_api import Reply
from tests.fakes.slack_api import BOT_USER_ID, CHANNEL_ID, USER_ID
from tests.slack_support import SlackApp, slack_app

ALICE = USER_ID  # a member, not an admin
ADA = "U0ADA00001"  # workspace admin
LEAD = "U0LEAD0001"  # approver of sales-bot, through a user group
BOB = "U0BOB00001"  # nobody in particular
CONFIG = """
apiVersion: cosmo/v1
personas:
  - {name: seller, role: Sales assistant, instructions: "Help {{user_name}}."}
skills:
  - name: draft_email
    description: Draft an email.
    kind: action
    input_schema: {type: object, properties: {to: {type: string}, body: {type: string}},
                   required: [to, body]}
agents:
  - name: sales-bot
    description: First words.
    persona: seller
    skills: [draft_email]
    approvers: [S0LEADS001]
    approval_channel: C0APPROVE1
"""


@pytest.fixture
def app(real_db, tmp_path):
    with slack_app(real_db, tmp_path, CONFIG) as running:
        running.slack.add_user(ADA, "ada", is_admin=True)
        running.slack.add_user(LEAD, "lena")
        running.slack.add_user(BOB, "bob")
        running.slack.add_usergroup("S0LEADS001", [LEAD])
        yield running


def command(app: SlackApp, text: str, *, user: str = ALICE) -> str:
    """Run `/agent text`; returns all the text of the answer the user got."""
    request = app.requests.slash_command(
        "/agent",
        text,
        user=user,
        response_url=app.slack.response_url(CHANNEL_ID, user=user),
    )
    assert app.send(request).status_code == 200
    app.run_jobs()
    return last_answer(app, user)


def last_answer(app: SlackApp, user: str) -> str:
    messages = app.slack.ephemeral_messages(user=user)
    assert messages, "nobody answered"
    return message_text(messages[-1].text, messages[-1].blocks)


def last_blocks(app: SlackApp, user: str) -> list[dict[str, Any]]:
    return list(app.slack.ephemeral_messages(user=user)[-1].blocks)


def message_text(text: str, blocks: list[dict[str, Any]]) -> str:
    parts = [text]
    for block in blocks:
        if block.get("text"):
            parts.append(block["text"]["text"])
        for item in block.get("elements", []):
            parts.append(item.get("text", "") if isinstance(item.get("text"), str) else "")
    return "\n".join(parts)


def buttons(blocks: list[dict[str, Any]], action_id: str) -> list[dict[str, Any]]:
    found = []
    for block in blocks:
        if block.get("accessory", {}).get("action_id") == action_id:
            found.append(block["accessory"])
        found += [e for e in block.get("elements", []) if e.get("action_id") == action_id]
    return found


def click(app: SlackApp, button: dict[str, Any], *, user: str) -> str:
    request = app.requests.block_action(
        button["action_id"],
        button["value"],
        user=user,
        ephemeral=True,
        response_url=app.slack.response_url(CHANNEL_ID, user=user),
    )
    assert app.send(request).status_code == 200
    app.run_jobs()
    return last_answer(app, user)


def change(app: SlackApp, description: str) -> None:
    agent = app.container.agents.get_by_name("default", "sales-bot")
    app.container.agents.update(
        "default", agent.id, AgentPatch(description=description), actor="slack:U0ADA00001"
    )


# -- history and rollback -----------------------------------------------------------------


def test_history_lists_versions_newest_first_and_anyone_may_read_it(app: SlackApp) -> None:
    change(app, "Second words.")
    change(app, "Third words.")

    answer = command(app, "history sales-bot", user=BOB)

    assert answer.index("*v3*") < answer.index("*v2*") < answer.index("*v1*")
    assert "← _current_" in answer.split("*v3*")[1].split("*v2*")[0]
    assert "<@U0ADA00001>" in answer  # who changed it, as a mention
    # Two older versions, each with a rollback button guarded by a confirm dialog.
    rollbacks = buttons(last_blocks(app, BOB), "agent_rollback")
    assert [json.loads(b["value"])["v"] for b in rollbacks] == [2, 1]
    assert all(b["confirm"]["confirm"]["text"] == "Roll back" for b in rollbacks)


def test_rollback_asks_first_then_restores_the_old_settings_as_a_new_version(
    app: SlackApp,
) -> None:
    change(app, "Second words.")

    question = command(app, "rollback sales-bot 1", user=ADA)

    assert "back from v2 to *v1*" in question and "saved as v3" in question
    agent = app.container.agents.get_by_name("default", "sales-bot")
    assert (agent.version, agent.description) == (2, "Second words.")  # nothing yet
    [button] = buttons(last_blocks(app, ADA), "agent_rollback")
    assert button["confirm"]["title"]["text"] == "Roll back?"

    done = click(app, button, user=ADA)

    assert "is back to the settings of v1, saved as v3" in done
    agent = app.container.agents.get_by_name("default", "sales-bot")
    assert (agent.version, agent.description) == (3, "First words.")
    [latest, *_] = app.container.agents.versions("default", agent.id).items
    assert latest.change == "rolled back to version 1"
    assert latest.created_by == "slack:U0ADA00001"


def test_a_rollback_button_older_than_the_agent_changes_nothing(app: SlackApp) -> None:
    change(app, "Second words.")
    command(app, "rollback sales-bot 1", user=ADA)
    [button] = buttons(last_blocks(app, ADA), "agent_rollback")
    change(app, "Third words, meanwhile.")

    answer = click(app, button, user=ADA)

    assert "changed since this message (now v3): nothing was rolled back" in answer
    agent = app.container.agents.get_by_name("default", "sales-bot")
    assert (agent.version, agent.description) == (3, "Third words, meanwhile.")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rollback sales-bot", "Which version?"),
        ("rollback sales-bot 2", "at version 2 already"),
        ("rollback sales-bot 9", "has versions 1 to 2"),
        ("rollback nobody-bot 1", "There is no agent named `nobody-bot`"),
    ],
)
def test_rollback_bad_input_gets_a_plain_answer(app: SlackApp, text: str, expected: str) -> None:
    change(app, "Second words.")

    assert expected in command(app, text, user=ADA)
    assert app.container.agents.get_by_name("default", "sales-bot").version == 2


def test_members_may_not_roll_back_even_with_a_button_from_an_admin(app: SlackApp) -> None:
    change(app, "Second words.")
    assert "Only agent admins" in command(app, "rollback sales-bot 1", user=BOB)
    command(app, "rollback sales-bot 1", user=ADA)
    [button] = buttons(last_blocks(app, ADA), "agent_rollback")

    assert "Only agent admins" in click(app, button, user=BOB)
    assert app.container.agents.get_by_name("default", "sales-bot").version == 2


# -- delete -------------------------------------------------------------------------------


def test_delete_asks_first_and_is_refused_while_the_agent_is_answering(app: SlackApp) -> None:
    agent = app.container.agents.get_by_name("default", "sales-bot")
    session = app.container.sessions.start("default", agent.id, user_id=ALICE)
    turn, _ = app.container.sessions.begin_turn(
        "default", session.id, user_id=ALICE, user_message="hi"
    )

    question = command(app, "delete sales-bot", user=ADA)
    assert "Delete *sales-bot* for good?" in question
    [button] = buttons(last_blocks(app, ADA), "agent_delete")
    assert button["style"] == "danger" and button["confirm"]["style"] == "danger"

    refused = click(app, button, user=ADA)
    assert "is answering right now (1 turn(s) pending or running): nothing was deleted" in refused
    assert "`/agent delete sales-bot --force`" in refused
    assert app.container.agents.get_by_name("default", "sales-bot").id == agent.id

    command(app, "delete sales-bot --force", user=ADA)
    [forced] = buttons(last_blocks(app, ADA), "agent_delete")
    assert "*sales-bot* was deleted by <@U0ADA00001>" in click(app, forced, user=ADA)
    assert "There is no agent named `sales-bot`" in command(app, "show sales-bot")
    assert turn.status == "pending"


def test_delete_without_running_turns_and_members_refused(app: SlackApp) -> None:
    assert "Only agent admins" in command(app, "delete sales-bot", user=BOB)
    command(app, "delete sales-bot", user=ADA)
    [button] = buttons(last_blocks(app, ADA), "agent_delete")
    assert "Only agent admins" in click(app, button, user=BOB)

    assert "was deleted" in click(app, button, user=ADA)
    assert "was deleted already" in click(app, button, user=ADA)


# -- outputs and audit --------------------------------------------------------------------


def propose(app: SlackApp, user: str, to: str) -> str:
    """`user` asks sales-bot in a thread; it proposes an email. Returns the output id."""
    app.claude.push(
        Reply.tool_use("draft_email", {"to": to, "body": "Hello **there**"}),
        Reply.text("Drafted it; waiting for approval."),
    )
    app.send(app.requests.app_mention(f"<@{BOT_USER_ID}> email {to}", user=user))
    app.run_jobs()
    [output] = [
        o
        for o in app.container.outputs.list("default", OutputFilter(), cursor=None, limit=50).items
        if o.arguments["to"] == to
    ]
    return output.id


def test_outputs_lists_what_each_person_may_see_with_links_to_approvals(app: SlackApp) -> None:
    alices = propose(app, ALICE, "ana@example.com")
    bobs = propose(app, BOB, "bo@example.com")

    mine = command(app, "outputs", user=ALICE)
    assert f"`{alices}`" in mine and f"`{bobs}`" not in mine
    assert "you asked for or approve" in mine
    assert "⏳ pending · `draft_email` by *sales-bot*" in mine
    assert "<https://" in mine, mine  # the approval message's permalink
    assert "Hello *there*" in mine  # Markdown preview as mrkdwn

    approver = command(app, "outputs sales-bot --pending", user=LEAD)  # via the user group
    assert f"`{alices}`" in approver and f"`{bobs}`" in approver

    admin = command(app, "outputs", user=ADA)
    assert f"`{alices}`" in admin and f"`{bobs}`" in admin
    assert "you asked for" not in admin

    nobody = command(app, "outputs sales-bot --pending", user="U0NOBODY01")
    assert nobody.startswith("No pending outputs of sales-bot you asked for or approve yet.")


def test_audit_shows_the_trail_to_those_who_may_see_the_output(app: SlackApp) -> None:
    output_id = propose(app, ALICE, "ana@example.com")
    [message, *_] = app.container.output_messages.of("default", output_id)
    approve = app.requests.block_action(
        "output_approve",
        output_id,
        user=LEAD,
        channel=message.channel,
        message_ts=message.ts,
        block_id=f"decide:{output_id}:r1",
    )
    assert app.send(approve).status_code == 200
    app.run_jobs()
    assert app.container.outputs.get("default", output_id).status != OutputStatus.PENDING

    trail = command(app, f"audit {output_id}", user=ALICE)

    assert f"*Audit of `{output_id}`*" in trail
    assert "1. *propose*" in trail
    assert "*approve* by <@U0LEAD0001> · via slack" in trail
    assert "`cosmo audit verify`" in trail

    hidden = command(app, f"audit {output_id}", user=BOB)
    assert hidden == command(app, "audit out_doesnotexist", user=BOB).replace(
        "out_doesnotexist", output_id
    )
    assert "that you may see" in hidden
