"""`/agent` and the App Home end to end: signed requests to our /slack/events, the real
Bolt app, the fake Slack Web API (views, ephemeral answers through `response_url`), the
fake Messages API and a real database."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import pytest

from bot.slack.conversations import session_key
from core.memory.port import MemoryMessage
from core.outputs.port import OutputFilter, OutputStatus
from tests.conftest import BACKENDS
from tests.fakes.anthropic_api import Reply
from tests.fakes.slack_api import BOT_USER_ID, CHANNEL_ID, USER_ID
from tests.slack_support import SlackApp, slack_app

ALICE = USER_ID  # a member, not an admin
ADA = "U0ADA00001"  # workspace admin (users.info is_admin)
OWEN = "U0OWEN0001"  # workspace owner
CORA = "U0CORA0001"  # named in COSMO_SLACK_ADMINS
GIL = "U0GIL00001"  # in a user group named in COSMO_SLACK_ADMINS
LEAD = "U0LEAD0001"  # approver of sales-bot
ADMINS_GROUP = "S0ADMINS01"
OTHER_CHANNEL = "C0OTHER001"
CONFIG = """
apiVersion: cosmo/v1
personas:
  - {name: seller, role: Sales assistant, tone: warm, instructions: "Help {{user_name}}."}
skills:
  - name: draft_email
    description: Draft an email.
    kind: action
    input_schema: {type: object, properties: {to: {type: string}, body: {type: string}},
                   required: [to, body]}
  - name: current_time
    description: Tell the time.
    kind: read
    input_schema: {type: object, properties: {}}
agents:
  - name: sales-bot
    description: Drafts follow-ups for the sales team.
    persona: seller
    skills: [draft_email, current_time]
    approvers: [U0LEAD0001, S0LEADS001]
  - name: support-bot
    persona: seller
"""


@pytest.fixture
def app(real_db, tmp_path):
    with slack_app(
        real_db, tmp_path, CONFIG, COSMO_SLACK_ADMINS=f"{CORA}, {ADMINS_GROUP}"
    ) as running:
        running.slack.add_user(ADA, "ada", is_admin=True)
        running.slack.add_user(OWEN, "owen", is_owner=True)
        running.slack.add_user(CORA, "cora")
        running.slack.add_user(GIL, "gil")
        running.slack.add_user(LEAD, "lena")
        running.slack.add_usergroup(ADMINS_GROUP, [GIL])
        running.slack.add_usergroup("S0LEADS001", [LEAD])
        yield running


# -- helpers ------------------------------------------------------------------------------


def command(app: SlackApp, text: str, *, user: str = ALICE, channel: str = CHANNEL_ID) -> Any:
    """Run `/agent text` and wait for everything it started. Returns the HTTP response."""
    request = app.requests.slash_command(
        "/agent",
        text,
        user=user,
        channel=channel,
        response_url=app.slack.response_url(channel, user=user),
    )
    response = app.send(request)
    assert response.status_code == 200, response.text
    app.run_jobs()
    return response


def answers(app: SlackApp, user: str = ALICE) -> list[str]:
    """What the user was told, oldest first: each answer's text and all its block text."""
    out = []
    for message in app.slack.ephemeral_messages(user=user):
        parts = [message.text]
        for block in message.blocks:
            if block.get("text"):
                parts.append(block["text"]["text"])
            for item in block.get("fields", []) + block.get("elements", []):
                parts.append(item.get("text", ""))
        out.append("\n".join(parts))
    return out


def last_answer(app: SlackApp, user: str = ALICE) -> str:
    found = answers(app, user)
    assert found, "nobody answered"
    return found[-1]


def opened_view(app: SlackApp) -> dict[str, Any]:
    """The modal last opened, as Slack stored it (with its id)."""
    call = app.slack.last("views.open")
    assert call.ok, call.response
    return dict(call.response["view"])


def block(view: dict[str, Any], block_id: str) -> dict[str, Any]:
    return next(b for b in view["blocks"] if b.get("block_id") == block_id)


def text(value: str | None) -> dict[str, Any]:
    return {"type": "plain_text_input", "value": value}


def select(value: str) -> dict[str, Any]:
    return {"type": "static_select", "selected_option": {"value": value}}


def multi(*values: str, kind: str = "multi_static_select") -> dict[str, Any]:
    return {"type": kind, "selected_options": [{"value": v} for v in values]}


def submit(
    app: SlackApp, view: dict[str, Any], values: dict[str, Any], *, user: str = ADA
) -> dict[str, Any]:
    """Submit a form Slack showed: `values` is `{block_id: state}` (action id = block id)."""
    request = app.requests.view_submission(
        view["callback_id"],
        {block_id: {block_id: state} for block_id, state in values.items()},
        user=user,
        private_metadata=view["private_metadata"],
        view_id=view["id"],
    )
    response = app.send(request)
    assert response.status_code == 200, response.text
    app.run_jobs()
    return response.json() if response.content else {}


def agent_values(**changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "name": text("renewals-bot"),
        "description": text("Chases renewals."),
        "persona": select("seller"),
        "model": text(None),
        "approvers": {"type": "multi_users_select", "selected_users": [LEAD]},
        "approval_channel": {"type": "conversations_select", "selected_conversation": None},
        "daily_output_limit": {"type": "number_input", "value": "20"},
        "daily_token_budget": {"type": "number_input", "value": None},
        "options": multi("memory_enabled", kind="checkboxes"),
    }
    values.update(changes)
    return values


# -- help, list, show ---------------------------------------------------------------------


def test_help_lists_every_subcommand_and_the_command_is_acked_empty(app):
    response = command(app, "help")

    assert response.text == ""  # acked at once; the answer goes through response_url
    said = last_answer(app)
    for sub in (
        "list",
        "show NAME",
        "use NAME",
        "--default",
        "create",
        "edit NAME",
        "skills NAME",
        "persona NAME",
        "memory",
        "memory clear",
        "end",
        "help",
    ):
        assert f"/agent {sub}" in said or sub in said, sub
    assert "COSMO_SLACK_ADMINS" in said
    assert app.slack.last("response_url").params["response_type"] == "ephemeral"

    command(app, "")
    assert "/agent create" in last_answer(app)


def test_list_shows_each_agent_with_persona_skills_and_state(app):
    command(app, "list")

    said = last_answer(app)
    assert "Agents (2)" in said
    assert "*sales-bot* · active" in said and "Drafts follow-ups" in said
    assert "Persona `seller` · Skills: `draft_email`, `current_time`" in said
    assert "*support-bot* · active" in said
    assert "No agent is chosen for this channel" in said


def test_show_describes_an_agents_configuration(app):
    command(app, "show Sales-Bot")

    said = last_answer(app)
    assert "sales-bot" in said and "Sales assistant" in said
    assert "`draft_email` (action, needs approval)" in said and "`current_time` (read)" in said
    assert "<@U0LEAD0001>" in said and "<!subteam^S0LEADS001>" in said
    assert "claude-sonnet-4-6" in said and "(default)" in said
    # How reviewers treated its action skills: the evidence before making one automatable.
    assert "How reviewers treated its actions* (last 30 days)" in said
    assert "`draft_email`: 0 proposed" in said and "`current_time`:" not in said
    assert "one approval; expires by the operator's default" in said

    app.client.patch(
        f"/api/v1/agents/{app.agent_id('sales-bot')}",
        json={
            "approval": {
                "required_approvals": 2,
                "expires_after": "24h",
                "on_expiry": "escalate",
                "escalate_to": ["S0LEADS001"],
                "remind_after": "2h",
                "remind_every": "4h",
            }
        },
        headers={"Authorization": "Bearer test-token"},
    )
    command(app, "show sales-bot")
    assert (
        "2 approvals; decide within 24h, then escalates once to <!subteam^S0LEADS001>; "
        "reminders after 2h, then every 4h"
    ) in last_answer(app)


def test_bad_input_gets_a_clear_answer(app):
    command(app, "frobnicate")
    assert "I don't know `/agent frobnicate`" in last_answer(app)
    command(app, "show")
    assert "Which agent? Usage: `/agent show NAME`" in last_answer(app)
    command(app, "show nobody")
    assert "There is no agent named `nobody`" in last_answer(app)
    command(app, "use sales-bot --everywhere", user=ADA)
    assert "Unknown option --everywhere" in last_answer(app, ADA)


def test_a_command_with_the_word_payload_reaches_the_listener(app):
    """Bolt would read a form body containing "payload" as interactivity; our route keeps it
    a command."""
    command(app, "show payload")
    assert "There is no agent named `payload`" in last_answer(app)


# -- use ----------------------------------------------------------------------------------


def test_use_binds_the_channel_and_a_mention_there_reaches_that_agent(app):
    c = app.container
    assert c.bindings.resolve("default", CHANNEL_ID).why == "ambiguous"

    command(app, "use support-bot", user=ADA)

    assert f"*support-bot* now answers in <#{CHANNEL_ID}>" in last_answer(app, ADA)
    resolution = c.bindings.resolve("default", CHANNEL_ID)
    assert (resolution.agent_id, resolution.why) == (app.agent_id("support-bot"), "channel")

    app.claude.push(Reply.text("Support here."))
    mention = app.requests.app_mention(f"<@{BOT_USER_ID}> hello")
    app.send(mention)
    app.run_jobs()
    ts = mention.payload["event"]["ts"]
    key = session_key(mention.payload["team_id"], CHANNEL_ID, ts)
    session = c.sessions.find_by_key("default", key)
    assert session is not None and session.agent_id == app.agent_id("support-bot")

    command(app, "use sales-bot —default", user=CORA, channel=OTHER_CHANNEL)  # smart dash
    assert "workspace default" in last_answer(app, CORA)
    assert c.bindings.resolve("default", OTHER_CHANNEL).agent_id == app.agent_id("sales-bot")
    assert c.bindings.resolve("default", None).why == "default"
    assert c.bindings.resolve("default", CHANNEL_ID).agent_id == app.agent_id("support-bot")


def test_use_in_a_dm_needs_default(app):
    command(app, "use sales-bot", user=ADA, channel="D0ADA00001")
    assert "--default" in last_answer(app, ADA)
    assert app.container.bindings.resolve("default", None).why == "ambiguous"


# -- who may change agents ----------------------------------------------------------------


def test_members_may_look_but_not_change(app):
    for text_ in (
        "use sales-bot",
        "use sales-bot --default",
        "create",
        "edit sales-bot",
        "skills sales-bot",
        "persona sales-bot",
    ):
        command(app, text_)
        assert "Only agent admins may change agents" in last_answer(app), text_
    assert app.slack.calls("views.open") == []
    assert app.container.bindings.resolve("default", CHANNEL_ID).why == "ambiguous"


@pytest.mark.parametrize("who", [ADA, OWEN, CORA, GIL])
def test_admins_owners_configured_users_and_groups_may_change(app, who):
    command(app, "edit sales-bot", user=who)
    assert opened_view(app)["callback_id"] == "agent_edit"


def test_a_forged_submission_from_a_member_is_refused(app):
    command(app, "create", user=ADA)
    view = opened_view(app)

    result = submit(app, view, agent_values(), user=ALICE)

    assert result["response_action"] == "errors"
    assert "Only agent admins" in result["errors"]["name"]
    assert [a.name for a in app.container.agents.list("default").items] == [
        "sales-bot",
        "support-bot",
    ]


# -- create -------------------------------------------------------------------------------


def test_create_opens_a_form_and_submitting_it_creates_the_agent(app):
    request = app.requests.slash_command(
        "/agent", "create", user=CORA, response_url=app.slack.response_url(CHANNEL_ID, user=CORA)
    )
    app.send(request)
    app.run_jobs()
    view = opened_view(app)
    assert app.slack.last("views.open").params["trigger_id"] == request.payload["trigger_id"]
    assert view["callback_id"] == "agent_create"
    persona_options = [o["value"] for o in block(view, "persona")["element"]["options"]]
    assert persona_options == ["seller", "__new__"]
    skill_options = [o["value"] for o in block(view, "skills")["element"]["options"]]
    assert skill_options == ["current_time", "draft_email"]  # by name

    result = submit(app, view, agent_values(skills=multi("draft_email")), user=CORA)

    assert result["response_action"] == "update"
    assert "renewals-bot" in json.dumps(result["view"])
    agent = app.container.agents.get_by_name("default", "renewals-bot")
    assert agent.description == "Chases renewals." and agent.persona == "seller"
    assert agent.skills == ["draft_email"] and agent.approvers == [LEAD]
    assert agent.limits.daily_output_limit == 20 and agent.limits.daily_token_budget is None
    assert agent.memory_enabled and not agent.allow_self_approval and agent.is_active
    assert app.container.agents.versions("default", agent.id).items[0].created_by == f"slack:{CORA}"


def test_create_with_a_new_persona_writes_both(app):
    command(app, "create", user=ADA)
    values = agent_values(
        persona=select("__new__"),
        persona_role=text("Renewals specialist"),
        persona_tone=text("brisk"),
        persona_instructions=text("Greet {{user_name}}."),
    )

    result = submit(app, opened_view(app), values)

    assert result["response_action"] == "update"
    agent = app.container.agents.get_by_name("default", "renewals-bot")
    persona = app.container.personas.get("default", agent.persona_id)
    assert (persona.name, persona.role, persona.tone) == (
        "renewals-bot",
        "Renewals specialist",
        "brisk",
    )


def test_validation_errors_show_on_their_fields(app):
    command(app, "create", user=ADA)
    view = opened_view(app)

    result = submit(
        app,
        view,
        agent_values(
            name=text("Bad Name!"),
            daily_output_limit={"type": "number_input", "value": "-1"},
        ),
    )
    assert result["response_action"] == "errors"
    assert set(result["errors"]) == {"name", "daily_output_limit"}
    assert "lower-case letters" in result["errors"]["name"]
    assert "greater than or equal to 0" in result["errors"]["daily_output_limit"]

    taken = submit(app, view, agent_values(name=text("sales-bot")))
    assert taken == {
        "response_action": "errors",
        "errors": {"name": "an agent named 'sales-bot' already exists"},
    }

    persona = submit(
        app,
        view,
        agent_values(persona=select("__new__"), persona_instructions=text("Hi {{nickname}}")),
    )
    assert set(persona["errors"]) == {"persona_role", "persona_instructions"}
    assert "{{nickname}}" in persona["errors"]["persona_instructions"]
    assert len(app.container.agents.list("default").items) == 2


def test_a_form_slack_would_not_open_gets_an_answer(app):
    app.slack.fail("views.open", "expired_trigger_id", times=1)

    command(app, "create", user=ADA)

    assert "Please run the command again" in last_answer(app, ADA)


# -- edit, skills, persona ----------------------------------------------------------------


def test_edit_shows_the_current_settings_and_saves_changes(app):
    command(app, "edit sales-bot", user=ADA)
    view = opened_view(app)
    assert block(view, "name")["element"]["initial_value"] == "sales-bot"
    assert block(view, "approvers")["element"]["initial_users"] == [LEAD]
    groups = block(view, "approver_groups")["element"]
    assert [o["value"] for o in groups["initial_options"]] == ["S0LEADS001"]
    checked = [o["value"] for o in block(view, "options")["element"]["initial_options"]]
    assert checked == ["memory_enabled", "is_active"]

    result = submit(
        app,
        view,
        agent_values(
            name=text("sales-bot"),
            description=text("Now with limits."),
            approvers={"type": "multi_users_select", "selected_users": [ADA]},
            daily_token_budget={"type": "number_input", "value": "50000"},
            options=multi("allow_self_approval", kind="checkboxes"),
        ),
    )

    assert result["response_action"] == "update"
    agent = app.container.agents.get_by_name("default", "sales-bot")
    assert agent.description == "Now with limits."
    assert agent.approvers == [ADA, "S0LEADS001"]  # the user group is kept
    assert agent.limits.daily_token_budget == 50_000
    assert agent.skills == ["draft_email", "current_time"]  # untouched by this form
    assert not agent.is_active and not agent.memory_enabled and agent.allow_self_approval

    stale = submit(app, view, agent_values(name=text("sales-bot")))
    assert stale["response_action"] == "errors"
    assert "Someone changed this agent" in stale["errors"]["name"]


def test_skills_form_sets_the_agents_skills(app):
    command(app, "skills support-bot", user=ADA)
    view = opened_view(app)
    assert view["callback_id"] == "agent_skills"
    assert "initial_options" not in block(view, "skills")["element"]

    result = submit(app, view, {"skills": multi("current_time")})

    assert result["response_action"] == "update"
    assert app.container.agents.get_by_name("default", "support-bot").skills == ["current_time"]


def test_persona_form_edits_the_persona_and_checks_its_template(app):
    command(app, "persona support-bot", user=ADA)
    view = opened_view(app)
    assert "Also used by `sales-bot`" in json.dumps(view)
    assert block(view, "instructions")["element"]["initial_value"] == "Help {{user_name}}."

    bad = submit(app, view, {"role": text("Seller"), "instructions": text("Hi {{nickname}}")})
    assert bad["response_action"] == "errors"
    assert "{{nickname}}" in bad["errors"]["instructions"]

    good = submit(
        app,
        view,
        {"role": text("Senior seller"), "tone": text("crisp"), "instructions": text("Hi.")},
    )
    assert good["response_action"] == "update"
    agent = app.container.agents.get_by_name("default", "sales-bot")
    persona = app.container.personas.get("default", agent.persona_id)
    assert (persona.role, persona.tone, persona.instructions) == ("Senior seller", "crisp", "Hi.")


# -- memory, end --------------------------------------------------------------------------


def test_memory_shows_and_clears_only_what_the_agent_remembers_about_the_caller(app):
    c = app.container
    sales = app.agent_id("sales-bot")
    c.bindings.bind("default", CHANNEL_ID, sales, by="test")
    assert c.memory is not None
    c.memory.add(
        "default",
        [MemoryMessage("user", "I prefer email & <short> notes")],
        user_id=ALICE,
        agent_id=sales,
    )
    c.memory.add(
        "default", [MemoryMessage("user", "Lena likes calls")], user_id=LEAD, agent_id=sales
    )

    command(app, "memory")
    said = last_answer(app)
    assert "What sales-bot remembers about you* (1)" in said
    assert "I prefer email &amp; &lt;short&gt; notes" in said and "Lena" not in said

    command(app, "memory clear")
    assert "*sales-bot* forgot 1 thing(s)" in last_answer(app)
    assert c.memory.list("default", user_id=ALICE) == []
    assert len(c.memory.list("default", user_id=LEAD)) == 1

    command(app, "memory", channel=OTHER_CHANNEL)
    assert "No agent answers here" in last_answer(app)
    command(app, "memory sales-bot", channel=OTHER_CHANNEL)
    assert "doesn't remember anything about you" in last_answer(app)


def test_end_ends_the_callers_latest_conversation_in_the_channel(app):
    c = app.container
    c.bindings.bind("default", CHANNEL_ID, app.agent_id("sales-bot"), by="test")
    app.claude.push(Reply.text("First."), Reply.text("Second."))
    threads = []
    for words in ("one", "two"):
        mention = app.requests.app_mention(f"<@{BOT_USER_ID}> {words}")
        app.send(mention)
        app.run_jobs()
        threads.append(mention.payload["event"]["ts"])
    sessions = c.sessions.list("default", user_id=ALICE).items
    assert [s.status for s in sessions] == ["active", "active"]

    command(app, "end")

    assert "Ended your conversation with *sales-bot*" in last_answer(app)
    first, latest = c.sessions.list("default", user_id=ALICE).items
    assert (first.status, latest.status) == ("active", "ended")
    said = app.slack.messages_in(CHANNEL_ID, thread_ts=threads[1])[-1]
    assert said.text.startswith(f"<@{ALICE}> ended this conversation")

    command(app, "end", channel=OTHER_CHANNEL)
    assert "no open conversation" in last_answer(app)


# -- App Home -----------------------------------------------------------------------------


def open_home(app: SlackApp, user: str) -> dict[str, Any]:
    event = {
        "type": "app_home_opened",
        "user": user,
        "channel": "D" + user[1:],
        "tab": "home",
        "event_ts": app.requests.next_ts(),
    }
    response = app.send(app.requests.event_callback(event))
    assert response.status_code == 200
    app.run_jobs()
    view = app.slack.home_view(user)
    assert view is not None
    return view


def home_click(app: SlackApp, action_id: str, output_id: str, user: str, view_id: str) -> Any:
    """A button click in the App Home: no channel, no message, the view as container."""
    payload = app.requests.block_action(action_id, output_id, user=user).payload
    for key in ("channel", "message", "response_url"):
        payload.pop(key, None)
    payload["container"] = {"type": "view", "view_id": view_id}
    payload["view"] = {"id": view_id, "type": "home", "blocks": [], "private_metadata": ""}
    body = urlencode({"payload": json.dumps(payload)})
    request = app.requests.sign(
        body, content_type="application/x-www-form-urlencoded", payload=payload
    )
    response = app.send(request)
    assert response.status_code == 200, response.text
    app.run_jobs()
    return response


def decide_blocks(view: dict[str, Any]) -> list[dict[str, Any]]:
    return [b for b in view["blocks"] if str(b.get("block_id", "")).startswith("decide:")]


@pytest.mark.parametrize("real_db", BACKENDS, indirect=True)
def test_app_home_lists_pending_approvals_and_its_buttons_decide(app):
    c = app.container
    c.bindings.bind("default", CHANNEL_ID, app.agent_id("sales-bot"), by="test")
    app.claude.push(
        Reply.tool_use("draft_email", {"to": "ana@example.com", "body": "Hi Ana"}),
        Reply.text("Sent for review."),
        Reply.tool_use("draft_email", {"to": "bo@example.com", "body": "Hi Bo"}),
        Reply.text("Sent for review."),
    )
    for words in ("email Ana", "email Bo"):
        app.send(app.requests.app_mention(f"<@{BOT_USER_ID}> {words}"))
        app.run_jobs()
    first, second = c.outputs.list("default", OutputFilter(), cursor=None, limit=10).items

    home = open_home(app, LEAD)
    actions = decide_blocks(home)
    # Newest first (the review queue).
    assert [b["block_id"] for b in actions] == [f"decide:{second.id}:r1", f"decide:{first.id}:r1"]
    assert [(e["action_id"], e["value"]) for e in actions[1]["elements"]] == [
        ("output_approve", first.id),
        ("output_reject", first.id),
        ("output_edit", first.id),
    ]
    shown = json.dumps(home)
    assert "Waiting for your approval* (2)" in shown and "Hi Ana" in shown
    assert "Today's usage" in shown and "2 turns" in shown

    home_click(app, "output_approve", first.id, LEAD, home["id"])

    assert c.outputs.get("default", first.id).status == OutputStatus.MANUAL
    republished = app.slack.home_view(LEAD)
    assert [b["block_id"] for b in decide_blocks(republished)] == [f"decide:{second.id}:r1"]

    home_click(app, "output_reject", second.id, LEAD, home["id"])
    assert opened_view(app)["callback_id"] == "output_reject_reason"

    asker = open_home(app, ALICE)
    assert decide_blocks(asker) == []  # alice is not an approver of sales-bot
    mine = json.dumps(asker)
    assert "What you asked for lately" in mine and "approved, manual follow-up" in mine


def test_app_home_for_a_workspace_without_agents(app):
    for agent in app.container.agents.list("default").items:
        app.container.agents.delete("default", agent.id)

    home = open_home(app, ADA)

    shown = json.dumps(home)
    assert "Nothing is waiting for you." in shown
    assert "Create one with `/agent create`." in shown


def test_a_late_app_home_click_is_answered_in_the_apps_dm(app):
    c = app.container
    c.bindings.bind("default", CHANNEL_ID, app.agent_id("sales-bot"), by="test")
    app.claude.push(
        Reply.tool_use("draft_email", {"to": "ana@example.com", "body": "Hi Ana"}),
        Reply.text("Sent for review."),
    )
    app.send(app.requests.app_mention(f"<@{BOT_USER_ID}> email Ana"))
    app.run_jobs()
    (output,) = c.outputs.list("default", OutputFilter(), cursor=None, limit=10).items
    home = open_home(app, LEAD)
    response = app.client.post(
        f"/api/v1/outputs/{output.id}/reject",
        json={"reason": "not now"},
        headers={"Authorization": "Bearer test-token"},
    )
    assert response.status_code == 200
    app.run_jobs()

    home_click(app, "output_approve", output.id, LEAD, home["id"])

    dm = [call for call in app.slack.calls("chat.postMessage") if call.params["channel"] == LEAD]
    assert len(dm) == 1 and "Too late" in dm[0].params["text"]
    assert c.outputs.get("default", output.id).status == OutputStatus.REJECTED


def test_the_edit_form_sets_the_approval_lifecycle_and_names_a_bad_duration(app):
    command(app, "edit sales-bot", user=ADA)
    view = opened_view(app)
    lifecycle = {
        "approval_required": {"type": "number_input", "value": "2"},
        "approval_expires_after": text("soon"),
        "approval_on_expiry": select("escalate"),
        "approval_escalate_to": {"type": "multi_users_select", "selected_users": [ADA]},
        "approval_remind_after": text("2h"),
        "approval_remind_every": text(None),
    }

    refused = submit(app, view, agent_values(name=text("sales-bot"), **lifecycle))

    assert refused["response_action"] == "errors"
    assert "not a duration" in refused["errors"]["approval_expires_after"]
    assert app.container.agents.get_by_name("default", "sales-bot").approval is None

    lifecycle["approval_expires_after"] = text("24h")
    saved = submit(app, view, agent_values(name=text("sales-bot"), **lifecycle))

    assert saved["response_action"] == "update", saved
    policy = app.container.agents.get_by_name("default", "sales-bot").approval
    assert policy is not None
    assert policy.model_dump(exclude_none=True) == {
        "required_approvals": 2,
        "expires_after": "24h",
        "on_expiry": "escalate",
        "escalate_to": [ADA],
        "remind_after": "2h",
    }
    command(app, "edit sales-bot", user=ADA)
    again = opened_view(app)
    assert block(again, "approval_expires_after")["element"]["initial_value"] == "24h"
    assert block(again, "approval_escalate_to")["element"]["initial_users"] == [ADA]
