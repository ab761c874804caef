"""`/agent`: look at agents, bind them to channels, open the forms that configure them.

    /agent help | list | show NAME | use NAME [--default] | create | edit NAME
           | skills NAME | persona NAME | memory [clear] [NAME] | end
           | skill new | skill edit NAME | skill test NAME {json}   (bot.slack.skill_commands)
           | kb new NAME [description] | kb list | kb show NAME   (bot.slack.kb_commands)
           | history NAME | rollback NAME VERSION | delete NAME   (bot.slack.agent_versions)
           | outputs [NAME] [--pending] | audit OUTPUT_ID        (bot.slack.output_lookup)

Slack gets its ack at once; the work runs right after (`SlackRuntime.spawn`) and the answer
goes back ephemerally through the command's `response_url`, which works in channels the
bot is not a member of. Forms (`create`, `edit`, `skills`, `persona`) are opened with the
command's `trigger_id` before anything slow; their submissions are validated by the same
pydantic models as the REST API (`AgentSpec`, `AgentPatch`, `PersonaSpec`, `SkillList`)
and errors are shown on the field; the submissions live in `bot.slack.agent_submissions`
and `bot.slack.skill_commands`, on the one path of `bot.slack.form_submission`.

Changing anything (`use` and the forms) is for agent admins: workspace admins and owners,
and `COSMO_SLACK_ADMINS` (see `bot.slack.admins`). Everyone may `list`, `show`, look at and
clear what an agent remembers about *them*, and end *their own* conversations.

`end`: slash commands carry no thread, so `/agent end` ends the conversation the caller
started in this channel (or DM) and talked in most recently, and says so in its thread.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack import admin_blocks as ui
from bot.slack import admin_forms as forms
from bot.slack import (
    agent_submissions,
    agent_versions,
    output_lookup,
    persona_preview,
    session_status,
    skill_commands,
    webhook_test,
)
from bot.slack.admins import may_configure
from bot.slack.blocks import slack_date
from bot.slack.errors import slack_message
from bot.slack.form_submission import (
    META_AGENT,
    META_ESCALATION_GROUPS,
    META_GROUPS,
    META_PERSONA,
    META_TENANT,
    META_VERSION,
    META_WEBHOOK_SECRET,
)
from bot.slack.invocation import (
    MAX_PAGES,
    PAGE,
    Answer,
    Handler,
    Invocation,
    Refusal,
    agent_named,
    all_agents,
    parse,
    require_admin,
    text_answer,
)
from bot.slack.kb_commands import cmd_kb
from bot.slack.runtime import SlackRuntime
from bot.slack.text import escape
from core.agent.bindings import WORKSPACE_DEFAULT
from core.concurrency import run_sync
from core.errors import (
    CosmoError,
    NotFound,
)
from core.outputs.stats import SkillStats, skill_stats
from core.schemas.views import PersonaView, SkillView
from core.sessions.models import SessionView
from core.sessions.pricing import KNOWN_MODELS

log = logging.getLogger("cosmo.slack.commands")

PERSONA_TEXT = {"role", "tone", "instructions", "variables"}


# -- reading ------------------------------------------------------------------------------


def _all_personas(rt: SlackRuntime, tenant: str) -> list[PersonaView]:
    return rt.container.personas.list(tenant, limit=PAGE).items


def _all_skills(rt: SlackRuntime, tenant: str) -> list[SkillView]:
    return rt.container.skills.list(tenant, limit=PAGE).items


# -- subcommands --------------------------------------------------------------------------


async def cmd_help(rt: SlackRuntime, inv: Invocation, client: AsyncWebClient) -> Answer:
    return ui.help_message(can_configure=await may_configure(rt, inv.tenant, inv.user))


async def cmd_list(rt: SlackRuntime, inv: Invocation, client: AsyncWebClient) -> Answer:
    c = rt.container
    agents = await run_sync(all_agents, rt, inv.tenant)
    resolution = await run_sync(c.bindings.resolve, inv.tenant, None if inv.is_dm else inv.channel)
    return ui.agent_list(agents, answering_id=resolution.agent_id, why=resolution.why)


async def cmd_show(rt: SlackRuntime, inv: Invocation, client: AsyncWebClient) -> Answer:
    c = rt.container
    agent = await agent_named(rt, inv.tenant, inv.name("show NAME"))

    def load() -> tuple[PersonaView | None, list[SkillView]]:
        try:
            persona: PersonaView | None = c.personas.get(inv.tenant, agent.persona_id)
        except NotFound:
            persona = None
        skills = []
        for name in agent.skills:
            try:
                skills.append(c.skills.get(inv.tenant, name))
            except NotFound:
                continue
        return persona, skills

    persona, skills = await run_sync(load)

    def figures() -> list[SkillStats]:
        now = c.quotas.clock()
        return [skill_stats(c.outputs, inv.tenant, s.name, now) for s in skills if s.kind != "read"]

    found = await run_sync(figures)
    return ui.agent_details(
        agent, persona=persona, skills=skills, model=c.settings.model, stats=found
    )


async def cmd_use(rt: SlackRuntime, inv: Invocation, client: AsyncWebClient) -> Answer:
    name = inv.name("use NAME [--default]")
    unknown = inv.flags - {"--default"}
    if unknown:
        options = escape(", ".join(sorted(unknown)))
        raise Refusal(f"Unknown option {options}. Only `--default` exists.")
    await require_admin(rt, inv.tenant, inv.user)
    agent = await agent_named(rt, inv.tenant, name)
    if not agent.is_active:
        raise Refusal(
            f"*{agent.name}* is inactive. Activate it first with `/agent edit {agent.name}`."
        )
    workspace = "--default" in inv.flags
    if inv.is_dm and not workspace:
        raise Refusal(
            "A direct message has no channel agent: DMs with me are answered by the "
            f"workspace default. Set it with `/agent use {agent.name} --default`."
        )
    target = WORKSPACE_DEFAULT if workspace else inv.channel
    await run_sync(
        lambda: rt.container.bindings.bind(inv.tenant, target, agent.id, by=f"slack:{inv.user}")
    )
    if workspace:
        return text_answer(
            f"✅ *{agent.name}* is now the workspace default: it answers in DMs and in every "
            "channel that has no agent of its own."
        )
    return text_answer(
        f"✅ *{agent.name}* now answers in <#{inv.channel}>. Mention me to talk to it."
    )


async def _form_choices(
    rt: SlackRuntime, tenant: str
) -> tuple[list[PersonaView], list[tuple[str, str]] | None, list[str]]:
    """Personas, user groups (None: Slack would not list them) and knowledge bases."""

    def stored() -> tuple[list[PersonaView], list[str]]:
        kbs = rt.container.knowledge.list(tenant, limit=PAGE).items
        return _all_personas(rt, tenant), [kb.name for kb in kbs]

    personas, kbs = await run_sync(stored)
    return personas, await rt.directory.usergroups(tenant), kbs


async def cmd_create(rt: SlackRuntime, inv: Invocation, client: AsyncWebClient) -> Answer:
    await require_admin(rt, inv.tenant, inv.user)
    personas, groups, kbs = await _form_choices(rt, inv.tenant)
    skills = await run_sync(_all_skills, rt, inv.tenant)
    view = forms.agent_form(
        agent=None,
        personas=personas,
        skills=skills,
        default_model=rt.container.settings.model,
        models=KNOWN_MODELS,
        groups=groups,
        knowledge_bases=kbs,
        metadata=forms.metadata({META_TENANT: inv.tenant}),
    )
    await client.views_open(trigger_id=inv.trigger_id, view=view)
    return None


async def cmd_edit(rt: SlackRuntime, inv: Invocation, client: AsyncWebClient) -> Answer:
    name = inv.name("edit NAME")
    await require_admin(rt, inv.tenant, inv.user)
    agent = await agent_named(rt, inv.tenant, name)
    personas, groups, kbs = await _form_choices(rt, inv.tenant)
    escalation = agent.approval.escalate_to or [] if agent.approval else []
    view = forms.agent_form(
        agent=agent,
        personas=personas,
        skills=[],
        default_model=rt.container.settings.model,
        models=KNOWN_MODELS,
        groups=groups,
        knowledge_bases=kbs,
        metadata=forms.metadata(
            {
                META_TENANT: inv.tenant,
                META_AGENT: agent.id,
                META_VERSION: agent.version,
                META_GROUPS: [a for a in agent.approvers if a.startswith("S")],
                META_ESCALATION_GROUPS: [p for p in escalation if p.startswith("S")],
                META_WEBHOOK_SECRET: bool(agent.webhook and agent.webhook.secret_set),
            }
        ),
    )
    await client.views_open(trigger_id=inv.trigger_id, view=view)
    return None


async def cmd_skills(rt: SlackRuntime, inv: Invocation, client: AsyncWebClient) -> Answer:
    name = inv.name("skills NAME")
    await require_admin(rt, inv.tenant, inv.user)
    agent = await agent_named(rt, inv.tenant, name)
    skills = await run_sync(_all_skills, rt, inv.tenant)
    if not skills:
        raise Refusal(
            "No skills are defined yet. Create one with `/agent skill new` (or in a config "
            "file applied with `cosmo apply`), then choose them here."
        )
    view = forms.skills_form(
        agent=agent,
        skills=skills,
        metadata=forms.metadata(
            {META_TENANT: inv.tenant, META_AGENT: agent.id, META_VERSION: agent.version}
        ),
    )
    await client.views_open(trigger_id=inv.trigger_id, view=view)
    return None


async def cmd_persona(rt: SlackRuntime, inv: Invocation, client: AsyncWebClient) -> Answer:
    name = inv.name("persona NAME")
    await require_admin(rt, inv.tenant, inv.user)
    agent = await agent_named(rt, inv.tenant, name)
    persona = await run_sync(rt.container.personas.get, inv.tenant, agent.persona_id)
    agents = await run_sync(all_agents, rt, inv.tenant)
    used_by = [a.name for a in agents if a.persona_id == persona.id]
    spec = persona_preview.spec_of(persona.name, persona.model_dump(include=PERSONA_TEXT))
    view = forms.persona_form(
        agent=agent,
        persona=persona,
        used_by=used_by,
        preview=persona_preview.preview_text(spec, agent.name, rt.container.quotas.clock()),
        metadata=forms.metadata(
            {META_TENANT: inv.tenant, META_AGENT: agent.id, META_PERSONA: persona.id}
        ),
    )
    await client.views_open(trigger_id=inv.trigger_id, view=view)
    return None


async def cmd_memory(rt: SlackRuntime, inv: Invocation, client: AsyncWebClient) -> Answer:
    c = rt.container
    args = list(inv.args)
    clear = bool(args) and args[0].lower() == "clear"
    if clear:
        args.pop(0)
    if args:
        agent = await agent_named(rt, inv.tenant, args[0].strip("`'\"").lower())
    else:
        resolution = await run_sync(
            c.bindings.resolve, inv.tenant, None if inv.is_dm else inv.channel
        )
        if resolution.agent_id is None:
            raise Refusal(
                "No agent answers here, so I can't tell whose memory you mean. Name one: "
                "`/agent memory NAME` (see `/agent list`)."
            )
        agent = await run_sync(c.agents.get, inv.tenant, resolution.agent_id)
    memory = c.memory
    if memory is None:
        raise Refusal("Memory is not set up on this server, so agents remember nothing.")
    if clear:
        count = await run_sync(
            lambda: memory.clear(inv.tenant, user_id=inv.user, agent_id=agent.id)
        )
        return text_answer(f"🧹 *{agent.name}* forgot {count} thing(s) it remembered about you.")
    records = await run_sync(
        lambda: memory.list(inv.tenant, user_id=inv.user, agent_id=agent.id, limit=100)
    )
    return ui.memory_list(agent, records)


def _latest_session(rt: SlackRuntime, inv: Invocation) -> SessionView | None:
    """The caller's active Slack conversation in this channel they talked in last."""
    found: list[SessionView] = []
    cursor = None
    for _ in range(MAX_PAGES):
        page = rt.container.sessions.list(
            inv.tenant, user_id=inv.user, status="active", cursor=cursor, limit=PAGE
        )
        found += [s for s in page.items if s.channel_id == inv.channel and s.source == "slack"]
        cursor = page.next_cursor
        if cursor is None:
            break
    return max(found, key=lambda s: (s.updated_at, s.id), default=None)


async def cmd_end(rt: SlackRuntime, inv: Invocation, client: AsyncWebClient) -> Answer:
    c = rt.container
    session = await run_sync(_latest_session, rt, inv)
    if session is None:
        raise Refusal(
            "You have no open conversation with me here. (`/agent end` ends the latest "
            "conversation you started in this channel.)"
        )
    await run_sync(c.sessions.end, inv.tenant, session.id)
    await session_status.set_status(
        client, session.channel_id, session.thread_ts, session_status.CLOSED
    )
    try:
        agent_name = (await run_sync(c.agents.get, inv.tenant, session.agent_id)).name
    except NotFound:
        agent_name = "a deleted agent"
    if session.thread_ts:
        try:
            await client.chat_postMessage(
                channel=inv.channel,
                thread_ts=session.thread_ts,
                text=f"<@{inv.user}> ended this conversation. Mention me in a new message "
                "to start another.",
            )
        except Exception:
            log.warning("could not say in its thread that session %s ended", session.id)
    return text_answer(
        f"Ended your conversation with *{agent_name}* that started "
        f"{slack_date(session.created_at)}. Mention me to start a new one."
    )


HANDLERS: dict[str, Handler] = {
    "help": cmd_help,
    "list": cmd_list,
    "show": cmd_show,
    "use": cmd_use,
    "create": cmd_create,
    "edit": cmd_edit,
    "skills": cmd_skills,
    "skill": skill_commands.cmd_skill,
    "persona": cmd_persona,
    "memory": cmd_memory,
    "end": cmd_end,
    "history": agent_versions.cmd_history,
    "rollback": agent_versions.cmd_rollback,
    "delete": agent_versions.cmd_delete,
    "outputs": output_lookup.cmd_outputs,
    "audit": output_lookup.cmd_audit,
    "kb": cmd_kb,
}


async def cmd_unknown(rt: SlackRuntime, inv: Invocation, client: AsyncWebClient) -> Answer:
    _, blocks = ui.help_message(can_configure=await may_configure(rt, inv.tenant, inv.user))
    sorry = f"I don't know `/agent {escape(inv.subcommand)}`. Here is what I do know:"
    return sorry, [{"type": "section", "text": {"type": "mrkdwn", "text": sorry}}, *blocks]


async def run(
    rt: SlackRuntime, inv: Invocation, respond: AsyncRespond, client: AsyncWebClient
) -> None:
    """Run one subcommand and answer it ephemerally; every failure gets a plain answer."""
    handler = HANDLERS.get(inv.subcommand, cmd_unknown)
    answer: Answer
    try:
        answer = await handler(rt, inv, client)
    except Refusal as refusal:
        answer = text_answer(refusal.text)
    except CosmoError as exc:
        answer = text_answer(slack_message(exc))
    except SlackApiError as exc:
        log.warning("/agent %s: Slack refused %s", inv.subcommand, exc.response.get("error"))
        answer = text_answer(
            "⚠️ Slack didn't let me open the form in time. Please run the command again."
            if exc.response.get("error") in ("expired_trigger_id", "exchanged_trigger_id")
            else "⚠️ Slack refused what I tried to do. Please try again."
        )
    except Exception:
        log.exception("/agent %s failed", inv.subcommand)
        answer = text_answer("⚠️ Something went wrong on my side. Please try again.")
    if answer is not None:
        text, blocks = answer
        await respond(text=text, blocks=blocks, response_type="ephemeral")


def register(app: AsyncApp, rt: SlackRuntime) -> None:
    async def on_command(
        ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient
    ) -> None:
        await ack()
        subcommand, args, flags = parse(command.get("text") or "")
        inv = Invocation(
            tenant=rt.tenant_for(command.get("team_id")),
            user=command["user_id"],
            channel=command.get("channel_id") or "",
            trigger_id=command.get("trigger_id") or "",
            subcommand=subcommand,
            args=args,
            flags=flags,
            text=command.get("text") or "",
        )
        rt.spawn(run(rt, inv, respond, client), name=f"/agent {subcommand}")

    app.command(ui.COMMAND)(on_command)
    agent_submissions.register(app, rt)
    skill_commands.register(app, rt)
    webhook_test.register(app, rt)
    persona_preview.register(app, rt)
