"""The `/agent` and App Home Block Kit, pinned as JSON, and Slack's limits checked on it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from bot.slack import admin_blocks as ui
from bot.slack import admin_forms as forms
from bot.slack import commands
from bot.slack import review_blocks as review
from bot.slack.blocks import approval_message, decision_buttons
from core.errors import FieldError
from core.memory.port import MemoryRecord
from core.outputs.port import Output, OutputStatus
from core.schemas.agent import AgentLimits
from core.schemas.views import AgentView, PersonaView, SkillView

WHEN = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
WHEN_TEXT = "<!date^1772443800^{date_short_pretty} at {time}|2026-03-02 09:30 UTC>"


def agent(**changes: Any) -> AgentView:
    values: dict[str, Any] = {
        "id": "agt_01",
        "tenant_id": "default",
        "name": "sales-bot",
        "description": "Drafts <follow-ups> & more",
        "persona": "seller",
        "persona_id": "per_01",
        "model": None,
        "skills": ["draft_email"],
        "knowledge_bases": [],
        "memory_enabled": True,
        "limits": AgentLimits(daily_output_limit=5),
        "approvers": ["U0LEAD0001", "S0LEADS001"],
        "allow_self_approval": False,
        "approval_channel": "C0APPROVE1",
        "webhook": None,
        "is_active": True,
        "version": 3,
        "created_at": WHEN,
        "updated_at": WHEN,
    }
    values.update(changes)
    return AgentView(**values)


def persona(**changes: Any) -> PersonaView:
    values: dict[str, Any] = {
        "id": "per_01",
        "tenant_id": "default",
        "name": "seller",
        "role": "Sales assistant",
        "tone": "warm",
        "instructions": "Help {{user_name}}.",
        "variables": {},
        "created_at": WHEN,
        "updated_at": WHEN,
    }
    values.update(changes)
    return PersonaView(**values)


def skill(name: str, kind: str = "action", description: str = "") -> SkillView:
    return SkillView(
        id=f"skl_{name}",
        tenant_id="default",
        name=name,
        description=description,
        input_schema={"type": "object"},
        kind=kind,
        is_automatable=False,
        executor={"type": "builtin"},
        created_at=WHEN,
        updated_at=WHEN,
    )


def output(**changes: Any) -> Output:
    values: dict[str, Any] = {
        "id": "out_01",
        "tenant_id": "default",
        "agent_id": "agt_01",
        "session_id": "ses_01",
        "skill": "draft_email",
        "is_automatable": False,
        "arguments": {"to": "ana@example.com"},
        "content_type": "text/markdown",
        "content_sha256": "0" * 64,
        "content_size": 12,
        "preview": "Hi Ana <3 & co",
        "status": OutputStatus.PENDING,
        "requested_by": "U0ALICE001",
        "created_at": WHEN,
        "updated_at": WHEN,
    }
    values.update(changes)
    return Output(**values)


def home(**changes: Any) -> ui.HomeData:
    values: dict[str, Any] = {
        "user_id": "U0LEAD0001",
        "day": "2026-03-02",
        "pending": [output()],
        "pending_total": 1,
        "recent": [output(id="out_02", status=OutputStatus.REJECTED)],
        "agents": [agent()],
        "usage": [ui.AgentUsageToday(agent(), turns=4, tokens=12_345, cost_usd=0.0421, outputs=2)],
        "can_configure": False,
    }
    values.update(changes)
    return ui.HomeData(**values)


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


# -- Slack's limits -----------------------------------------------------------------------


def check_slack_limits(blocks: list[dict[str, Any]], *, most: int) -> None:
    """The limits Slack enforces that dynamic content could break."""
    assert len(blocks) <= most
    ids = [b["block_id"] for b in blocks if "block_id" in b]
    assert len(ids) == len(set(ids)), "block ids must be unique"
    for b in blocks:
        if b["type"] == "section" and "text" in b:
            assert len(b["text"]["text"]) <= 3_000
        if b["type"] == "section" and "fields" in b:
            assert len(b["fields"]) <= 10
            assert all(len(f["text"]) <= 2_000 for f in b["fields"])
        if b["type"] == "header":
            assert len(b["text"]["text"]) <= 150
        element = b.get("element") or {}
        options = element.get("options") or []
        assert 0 < len(options) <= 100 or "options" not in element
        for option in options:
            assert len(option["text"]["text"]) <= 75
            assert len(option.get("description", {}).get("text", "")) <= 75
            assert len(option["value"]) <= 150


def check_modal(view: dict[str, Any]) -> None:
    assert len(view["title"]["text"]) <= 24
    assert len(view.get("private_metadata", "")) <= 3_000
    check_slack_limits(view["blocks"], most=100)


# -- /agent answers -----------------------------------------------------------------------


def test_help_lists_every_command_grouped_for_everyone_then_admins():
    text, blocks = ui.help_message(can_configure=True)

    assert text == "Cosmo agents: /agent help lists every command"
    assert [b["type"] for b in blocks] == ["section"] * 4 + ["context"]
    headings = [b["text"]["text"].splitlines()[0] for b in blocks[:4]]
    assert headings == [
        "*Talking to agents*",
        "*Looking things up*",
        "*Agents (admins)*",
        "*Skills and knowledge (admins)*",
    ]
    agents = blocks[2]["text"]["text"].splitlines()[1:]
    assert "`/agent rollback NAME VERSION` — go back to an earlier version (asks first)" in agents
    assert blocks[4]["elements"][0]["text"].startswith("You may change agents.")
    member = ui.help_message(can_configure=False)[1][4]["elements"][0]["text"]
    assert "`COSMO_SLACK_ADMINS`" in member


def test_help_and_the_subcommands_agree():
    """Every subcommand help names has a handler, and every handler is in the help."""
    listed = {usage.split()[0] for _, entries in ui.HELP for usage, _ in entries if usage[0] != "("}
    assert listed == set(commands.HANDLERS)


def test_agent_list_marks_the_agent_answering_here_and_escapes_descriptions():
    quiet = agent(id="agt_02", name="support-bot", description="", skills=[], is_active=False)

    text, blocks = ui.agent_list([agent(), quiet], answering_id="agt_01", why="channel")

    assert text == "Agents (2): sales-bot, support-bot"
    assert blocks == [
        {"type": "header", "text": {"type": "plain_text", "text": "Agents (2)"}},
        section(
            "*sales-bot* · active  ← _answers in this channel_\n"
            "Drafts &lt;follow-ups&gt; &amp; more\n"
            "Persona `seller` · Skills: `draft_email`"
        ),
        section("*support-bot* · ⏸ inactive\nPersona `seller` · Skills: _none_"),
    ]


def test_agent_list_explains_an_empty_workspace_and_an_unchosen_channel():
    assert ui.agent_list([], answering_id=None, why="none")[1] == [
        section("No agents yet. An agent admin can create one with `/agent create`.")
    ]
    blocks = ui.agent_list([agent(), agent(id="agt_02")], answering_id=None, why="ambiguous")[1]
    said = blocks[-1]["elements"][0]["text"]
    assert said.startswith("No agent is chosen for this channel")
    # Seen: it said mentions "go unanswered"; they are answered, asking to pick an agent.
    assert "unanswered" not in said and "answered with a request to pick one" in said


def test_a_long_agent_list_stays_within_a_messages_blocks():
    many = [agent(id=f"agt_{i:03}", name=f"bot-{i}") for i in range(80)]
    blocks = ui.agent_list(many, answering_id=None, why="none")[1]
    check_slack_limits(blocks, most=50)
    assert blocks[-1] == context("…and 33 more.")


def test_agent_details_show_the_configuration_without_secrets():
    text, blocks = ui.agent_details(
        agent(knowledge_bases=["pricing"]),
        persona=persona(),
        skills=[skill("draft_email")],
        model="claude-sonnet-4-6",
    )

    assert text == "Agent sales-bot"
    assert blocks == [
        {"type": "header", "text": {"type": "plain_text", "text": "sales-bot"}},
        section("Drafts &lt;follow-ups&gt; &amp; more"),
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": "*Persona*\n`seller` — Sales assistant"},
                {"type": "mrkdwn", "text": "*Model*\n`claude-sonnet-4-6` (default)"},
                {"type": "mrkdwn", "text": "*Memory*\non"},
                {"type": "mrkdwn", "text": "*Status*\nactive · version 3"},
                {
                    "type": "mrkdwn",
                    "text": "*Approvers*\n<@U0LEAD0001>, <!subteam^S0LEADS001> "
                    "(not the person who asked)",
                },
                {"type": "mrkdwn", "text": "*Approval channel*\n<#C0APPROVE1>"},
                {"type": "mrkdwn", "text": "*Limits*\n5 outputs/day, unlimited"},
                {"type": "mrkdwn", "text": "*Webhook*\n_none_"},
            ],
        },
        section("*Skills*\n`draft_email` (action, needs approval)"),
        section("*Approval lifecycle*\none approval; expires by the operator's default"),
        section("*Knowledge bases*\n`pricing`"),
    ]


def test_memory_list_escapes_what_was_remembered():
    record = MemoryRecord("mem_1", "Prefers <email> & short notes", "U1", "agt_01", None, WHEN)

    text, blocks = ui.memory_list(agent(memory_enabled=False), [record])

    assert text == "sales-bot remembers 1 thing(s) about you."
    assert blocks == [
        section("*What sales-bot remembers about you* (1)"),
        section(f"• Prefers &lt;email&gt; &amp; short notes _({WHEN_TEXT})_"),
        context("Make it forget all of this with `/agent memory clear`."),
        context("Memory is off for *sales-bot*: it remembers nothing new."),
    ]
    assert ui.memory_list(agent(), [])[1] == [
        section("*sales-bot* doesn't remember anything about you.")
    ]


# -- forms --------------------------------------------------------------------------------


def test_the_create_form_offers_a_new_persona_when_there_is_none():
    view = forms.agent_form(
        agent=None, personas=[], skills=[], default_model="claude-x", metadata='{"t":"default"}'
    )

    check_modal(view)
    assert (view["callback_id"], view["title"]["text"], view["submit"]["text"]) == (
        "agent_create",
        "New agent",
        "Create",
    )
    assert [b["block_id"] for b in view["blocks"]] == [
        "name",
        "description",
        "persona",
        "persona_role",
        "persona_tone",
        "persona_instructions",
        "model",
        "model_other",
        "approvers",
        "approval_channel",
        "approval_required",
        "approval_expires_after",
        "approval_on_expiry",
        "approval_escalate_to",
        "approval_remind_after",
        "approval_remind_every",
        "daily_output_limit",
        "daily_token_budget",
        "webhook_url",
        "webhook_secret_env",
        "webhook_test",
        "webhook_test_result",
        "options",
    ]
    inputs = [b for b in view["blocks"] if b["type"] == "input"]
    assert all(b["element"]["action_id"] == b["block_id"] for b in inputs)
    persona_select = view["blocks"][2]["element"]
    new = {"text": {"type": "plain_text", "text": "✨ A new persona (describe it below)"},
           "value": "__new__"}  # fmt: skip
    assert persona_select["options"] == [new]
    assert persona_select["initial_option"] == new
    assert view["blocks"][-1]["element"]["options"] == [
        {
            "text": {"type": "plain_text", "text": "Remember what people tell it (per person)"},
            "value": "memory_enabled",
        },
        {
            "text": {"type": "plain_text", "text": "Let people approve outputs they asked for"},
            "value": "allow_self_approval",
        },
    ]
    assert view["blocks"][-1]["element"]["initial_options"] == [
        view["blocks"][-1]["element"]["options"][0]
    ]


def test_the_edit_form_is_filled_in_from_the_agent():
    long_name = agent(name="a-really-long-agent-name-for-sales")
    view = forms.agent_form(
        agent=long_name,
        personas=[persona(), persona(id="per_02", name="helper", role="")],
        skills=[skill("draft_email")],
        default_model="claude-x",
        metadata="{}",
        groups=None,  # Slack would not list user groups
    )

    check_modal(view)
    assert view["title"]["text"] == "Edit a-really-long-agen…"
    blocks = {b["block_id"]: b for b in view["blocks"]}
    assert "skills" not in blocks and "persona_role" not in blocks
    assert blocks["name"]["element"]["initial_value"] == "a-really-long-agent-name-for-sales"
    assert blocks["persona"]["element"]["initial_option"] == {
        "text": {"type": "plain_text", "text": "seller"},
        "value": "seller",
        "description": {"type": "plain_text", "text": "Sales assistant"},
    }
    assert blocks["approvers"]["element"]["initial_users"] == ["U0LEAD0001"]
    assert "User groups (S0LEADS001) stay approvers" in blocks["approvers"]["hint"]["text"]
    assert "approver_groups" not in blocks
    assert blocks["approval_channel"]["element"]["initial_conversation"] == "C0APPROVE1"
    assert blocks["daily_output_limit"]["element"] == {
        "type": "number_input",
        "is_decimal_allowed": False,
        "min_value": "0",
        "initial_value": "5",
        "action_id": "daily_output_limit",
    }
    assert "initial_value" not in blocks["daily_token_budget"]["element"]
    checked = [o["value"] for o in blocks["options"]["element"]["initial_options"]]
    assert checked == ["memory_enabled", "is_active"]


def test_the_skills_form():
    view = forms.skills_form(
        agent=agent(),
        skills=[skill("draft_email", description="Draft an email."), skill("clock", "read")],
        metadata='{"t":"default","a":"agt_01","v":3}',
    )

    assert view == {
        "type": "modal",
        "callback_id": "agent_skills",
        "private_metadata": '{"t":"default","a":"agt_01","v":3}',
        "title": {"type": "plain_text", "text": "Skills: sales-bot"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "submit": {"type": "plain_text", "text": "Save"},
        "blocks": [
            {
                "type": "input",
                "block_id": "skills",
                "label": {"type": "plain_text", "text": "Skills of sales-bot"},
                "element": {
                    "type": "multi_static_select",
                    "placeholder": {"type": "plain_text", "text": "Choose skills"},
                    "options": [
                        {
                            "text": {"type": "plain_text", "text": "clock"},
                            "value": "clock",
                            "description": {"type": "plain_text", "text": "read"},
                        },
                        {
                            "text": {"type": "plain_text", "text": "draft_email"},
                            "value": "draft_email",
                            "description": {
                                "type": "plain_text",
                                "text": "action · needs approval — Draft an email.",
                            },
                        },
                    ],
                    "initial_options": [
                        {
                            "text": {"type": "plain_text", "text": "draft_email"},
                            "value": "draft_email",
                            "description": {
                                "type": "plain_text",
                                "text": "action · needs approval — Draft an email.",
                            },
                        }
                    ],
                    "action_id": "skills",
                },
                "optional": True,
                "hint": {
                    "type": "plain_text",
                    "text": "Read skills run during the chat; action skills become outputs "
                    "someone approves.",
                },
            }
        ],
    }


def test_the_skills_form_stays_within_slacks_option_limit():
    many = [skill(f"skill_{i:03}", description="x" * 200) for i in range(150)]
    view = forms.skills_form(agent=agent(skills=["skill_149"]), skills=many, metadata="{}")
    check_modal(view)
    element = view["blocks"][0]["element"]
    assert len(element["options"]) == 100 and "initial_options" not in element
    assert "Slack shows the first 100" in view["blocks"][0]["hint"]["text"]


def test_the_persona_form_warns_about_sharing_and_keeps_overlong_instructions():
    view = forms.persona_form(
        agent=agent(),
        persona=persona(variables={"region": {"default": "EMEA"}}),
        used_by=["sales-bot", "support-bot"],
        metadata="{}",
    )
    check_modal(view)
    assert view["blocks"][:2] == [
        context("Persona `seller` of *sales-bot*."),
        context("⚠️ Also used by `support-bot`: changes apply to them too."),
    ]
    instructions = view["blocks"][4]
    assert instructions["element"]["initial_value"] == "Help {{user_name}}."
    assert instructions["hint"]["text"] == (
        "Placeholders: {{user_name}}, {{channel}}, {{date}}, {{agent_name}}, {{region}}. "
        "Declare your own below."
    )
    rows = {b["block_id"]: b for b in view["blocks"] if b.get("block_id", "").startswith("var")}
    assert rows["var1_name"]["element"]["initial_value"] == "region"
    assert rows["var1_default"]["element"]["initial_value"] == "EMEA"
    assert "var3_name" in rows and "var4_name" not in rows  # one declared, two spare

    long = forms.persona_form(
        agent=agent(), persona=persona(instructions="x" * 5_000), used_by=[], metadata="{}"
    )
    assert [b.get("block_id") for b in long["blocks"]][:4] == [None, "role", "tone", None]
    assert "5,000 characters" in long["blocks"][3]["elements"][0]["text"]
    assert "cosmo apply" in long["blocks"][3]["elements"][0]["text"]


def test_done_view():
    assert forms.done_view("Agent created", "✅ *x* is ready.") == {
        "type": "modal",
        "title": {"type": "plain_text", "text": "Agent created"},
        "close": {"type": "plain_text", "text": "Done"},
        "blocks": [section("✅ *x* is ready.")],
    }


# -- reading forms back -------------------------------------------------------------------


def state(**values: Any) -> dict[str, Any]:
    return {block: {block: value} for block, value in values.items()}


def test_reading_a_create_form_with_a_new_persona():
    values = state(
        name={"type": "plain_text_input", "value": " renewals-bot "},
        description={"type": "plain_text_input", "value": None},
        persona={"type": "static_select", "selected_option": {"value": "__new__"}},
        persona_role={"type": "plain_text_input", "value": "Renewals"},
        persona_tone={"type": "plain_text_input", "value": None},
        persona_instructions={"type": "plain_text_input", "value": "Hi {{user_name}}"},
        skills={"type": "multi_static_select", "selected_options": [{"value": "draft_email"}]},
        model={"type": "plain_text_input", "value": "  "},
        approvers={"type": "multi_users_select", "selected_users": ["U0LEAD0001"]},
        approval_channel={"type": "conversations_select", "selected_conversation": None},
        daily_output_limit={"type": "number_input", "value": "7"},
        daily_token_budget={"type": "number_input", "value": None},
        options={"type": "checkboxes", "selected_options": [{"value": "memory_enabled"}]},
    )

    form = forms.read_agent_form(values, creating=True)

    assert form.agent == {
        "name": "renewals-bot",
        "description": "",
        "persona": "renewals-bot",
        "model": None,
        "approvers": ["U0LEAD0001"],
        "approval_channel": None,
        "limits": {"daily_output_limit": "7", "daily_token_budget": None},
        "memory_enabled": True,
        "allow_self_approval": False,
        "approval": None,  # nothing chosen: inherit the defaults
        "skills": ["draft_email"],
    }
    assert form.new_persona == {
        "name": "renewals-bot",
        "role": "Renewals",
        "tone": "",
        "instructions": "Hi {{user_name}}",
    }


def test_reading_an_edit_form_keeps_skills_out_and_reads_active():
    values = state(
        name={"type": "plain_text_input", "value": "sales-bot"},
        persona={"type": "static_select", "selected_option": {"value": "seller"}},
        options={"type": "checkboxes", "selected_options": [{"value": "is_active"}]},
    )
    form = forms.read_agent_form(values, creating=False)
    assert "skills" not in form.agent and form.new_persona is None
    assert (form.agent["is_active"], form.agent["memory_enabled"]) == (True, False)


def test_reading_the_persona_form_leaves_missing_instructions_alone():
    values = state(
        role={"type": "plain_text_input", "value": " Seller "},
        tone={"type": "plain_text_input", "value": None},
    )
    assert forms.read_persona_form(values) == {"role": "Seller", "tone": ""}


def test_form_errors_land_on_the_block_of_their_field():
    errors = [
        FieldError(("body", "name"), "String should match pattern '^[a-z][a-z0-9_-]{0,62}$'"),
        FieldError(("name",), "a second error on the same field is dropped"),
        FieldError(("limits", "daily_token_budget"), "Input should be a valid integer"),
        FieldError(("approvers",), "S1: approvers are Slack user ids"),
        FieldError(("webhook", "url"), "must be an absolute https:// URL"),
    ]

    assert forms.form_errors(errors, forms.AGENT_FIELDS, fallback="description") == {
        "name": "Use lower-case letters, digits, - and _, starting with a letter (at most 63).",
        "daily_token_budget": "Enter a whole number.",
        "approvers": "S1: approvers are Slack user ids",
        "webhook_url": "Must be an absolute https:// URL",
    }


# -- App Home -----------------------------------------------------------------------------


def test_home_decision_buttons_are_the_approval_messages_buttons():
    """Same action ids, values and confirmation: the approval listeners handle both."""
    for automatable in (False, True):
        out = output(is_automatable=automatable)
        message = approval_message(out, agent_name="sales-bot", content="x", content_url=None)
        assert decision_buttons(out) == message[1][-1]


def test_home_view():
    view = ui.home_view(home())

    assert view == {
        "type": "home",
        "private_metadata": '{"agent": null, "skill": null, "age": "any"}',
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "Cosmo agents"}},
            context(
                "Hi <@U0LEAD0001>: what waits for your approval, what you asked for lately, "
                "and the agents in this workspace. Type `/agent help` anywhere for commands."
            ),
            {"type": "divider"},
            section("*Waiting for your approval* (1)"),
            review.filter_block(review.ReviewFilters(), [agent()], []),
            section(
                f"*Draft email* · proposed by *sales-bot* for <@U0ALICE001> · {WHEN_TEXT}\n"
                ">Hi Ana &lt;3 &amp; co"
            ),
            decision_buttons(output()),
            {"type": "actions", "elements": [review.approve_shown_button([output()], [agent()])]},
            {"type": "divider"},
            section("*What you asked for lately*"),
            section(f"❌ rejected · *Draft email* by *sales-bot* · {WHEN_TEXT}"),
            {"type": "divider"},
            section("*Agents* (1)"),
            section(
                "*sales-bot* · active\nDrafts &lt;follow-ups&gt; &amp; more\n"
                "Persona `seller` · Skills: `draft_email`"
            ),
            {"type": "divider"},
            section("*Today's usage* (2026-03-02, UTC)"),
            {
                "type": "section",
                "fields": [
                    {
                        "type": "mrkdwn",
                        "text": "*sales-bot*\n4 turns · 12.3k tokens · $0.04\n2 outputs of 5",
                    }
                ],
            },
        ],
    }


def test_an_empty_home_for_an_admin():
    view = ui.home_view(
        home(pending=[], pending_total=0, recent=[], agents=[], usage=[], can_configure=True)
    )
    texts = [b["elements"][0]["text"] for b in view["blocks"] if b["type"] == "context"]
    assert texts[1:] == [
        "Nothing is waiting for you.",
        "Nothing in the last week.",
        "No agents yet. Create one with `/agent create`.",
        "No agents, no usage.",
    ]


@pytest.mark.parametrize("count", [0, 12, 40])
def test_a_busy_home_stays_within_slacks_limits(count):
    pending = [output(id=f"out_{i:03}") for i in range(min(count, 10))]
    agents = [agent(id=f"agt_{i:03}", name=f"bot-{i}") for i in range(count)]
    usage = [ui.AgentUsageToday(a, 1, 10, 0.0, 0) for a in agents]
    view = ui.home_view(
        home(pending=pending, pending_total=count, agents=agents, usage=usage, recent=[])
    )
    check_slack_limits(view["blocks"], most=100)
    if count > 10:
        assert context(f"…and {count - 10} more; the newest are shown first.") in view["blocks"]


def test_agent_details_say_which_skill_cannot_run_and_why():
    broken = skill("open_ticket").model_copy(
        update={"usable": False, "problem": "name: there is no built-in function 'open_ticket'"}
    )
    _, blocks = ui.agent_details(
        agent(skills=["draft_email", "open_ticket"]),
        persona=persona(),
        skills=[skill("draft_email"), broken],
        model="m",
    )
    texts = [b["text"]["text"] for b in blocks if b["type"] == "section" and "text" in b]
    skills_text = next(t for t in texts if t.startswith("*Skills*"))
    assert "`open_ticket` (unusable: the agent answers without it)" in skills_text
    assert texts[-1] == (
        "*:warning: Skills that cannot run here*\n"
        "• `open_ticket`: name: there is no built-in function 'open_ticket'"
    )
