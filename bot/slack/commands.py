"""`/agent`: look at agents, bind them to channels, open the forms that configure them.

    /agent help | list | show NAME | use NAME [--default] | create | edit NAME
           | skills NAME | persona NAME | memory [clear] [NAME] | end
           | kb new NAME [description] | kb list | kb show NAME   (bot.slack.kb_commands)

Slack gets its ack at once; the work runs right after (`SlackRuntime.spawn`) and the answer
goes back ephemerally through the command's `response_url`, which works in channels the
bot is not a member of. Forms (`create`, `edit`, `skills`, `persona`) are opened with the
command's `trigger_id` before anything slow; their submissions are validated by the same
pydantic models as the REST API (`AgentSpec`, `AgentPatch`, `PersonaSpec`, `SkillList`)
and errors are shown on the field.

Changing anything (`use` and the forms) is for agent admins: workspace admins and owners,
and `COSMO_SLACK_ADMINS` (see `bot.slack.admins`). Everyone may `list`, `show`, look at and
clear what an agent remembers about *them*, and end *their own* conversations.

`end`: slash commands carry no thread, so `/agent end` ends the conversation the caller
started in this channel (or DM) and talked in most recently, and says so in its thread.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack import admin_blocks as ui
from bot.slack import admin_forms as forms
from bot.slack import agent_versions, output_lookup, session_status
from bot.slack.admins import may_configure
from bot.slack.blocks import slack_date
from bot.slack.errors import slack_message
from bot.slack.invocation import (
    NOT_ADMIN,
    Answer,
    Handler,
    Invocation,
    Refusal,
    agent_named,
    parse,
    require_admin,
    text_answer,
)
from bot.slack.kb_commands import cmd_kb
from bot.slack.runtime import SlackRuntime
from bot.slack.text import escape
from core.agent.bindings import WORKSPACE_DEFAULT
from core.concurrency import run_sync
from core.config_document import ConfigDocument
from core.errors import (
    Conflict,
    CosmoError,
    FieldError,
    NotFound,
    PreconditionFailed,
    ValidationFailed,
)
from core.outputs.stats import SkillStats, skill_stats
from core.schemas.agent import AgentPatch, AgentSpec, SkillList
from core.schemas.persona import PersonaPatch, PersonaSpec
from core.schemas.validation import field_errors
from core.schemas.views import AgentView, PersonaView, SkillView
from core.sessions.models import SessionView

log = logging.getLogger("cosmo.slack.commands")

STALE_FORM = "This form is out of date. Close it and run the command again."
PAGE = 200  # the largest page core hands out
MAX_PAGES = 10


# -- reading ------------------------------------------------------------------------------


def _all_agents(rt: SlackRuntime, tenant: str) -> list[AgentView]:
    found: list[AgentView] = []
    cursor = None
    for _ in range(MAX_PAGES):
        page = rt.container.agents.list(tenant, cursor=cursor, limit=PAGE)
        found += page.items
        cursor = page.next_cursor
        if cursor is None:
            break
    return found


def _all_personas(rt: SlackRuntime, tenant: str) -> list[PersonaView]:
    return rt.container.personas.list(tenant, limit=PAGE).items


def _all_skills(rt: SlackRuntime, tenant: str) -> list[SkillView]:
    return rt.container.skills.list(tenant, limit=PAGE).items


# -- subcommands --------------------------------------------------------------------------


async def cmd_help(rt: SlackRuntime, inv: Invocation, client: AsyncWebClient) -> Answer:
    return ui.help_message(can_configure=await may_configure(rt, inv.tenant, inv.user))


async def cmd_list(rt: SlackRuntime, inv: Invocation, client: AsyncWebClient) -> Answer:
    c = rt.container
    agents = await run_sync(_all_agents, rt, inv.tenant)
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


async def cmd_create(rt: SlackRuntime, inv: Invocation, client: AsyncWebClient) -> Answer:
    await require_admin(rt, inv.tenant, inv.user)
    personas = await run_sync(_all_personas, rt, inv.tenant)
    skills = await run_sync(_all_skills, rt, inv.tenant)
    view = forms.agent_form(
        agent=None,
        personas=personas,
        skills=skills,
        default_model=rt.container.settings.model,
        metadata=forms.metadata(t=inv.tenant),
    )
    await client.views_open(trigger_id=inv.trigger_id, view=view)
    return None


async def cmd_edit(rt: SlackRuntime, inv: Invocation, client: AsyncWebClient) -> Answer:
    name = inv.name("edit NAME")
    await require_admin(rt, inv.tenant, inv.user)
    agent = await agent_named(rt, inv.tenant, name)
    personas = await run_sync(_all_personas, rt, inv.tenant)
    groups = [a for a in agent.approvers if a.startswith("S")]
    view = forms.agent_form(
        agent=agent,
        personas=personas,
        skills=[],
        default_model=rt.container.settings.model,
        metadata=forms.metadata(
            t=inv.tenant,
            a=agent.id,
            v=agent.version,
            g=groups,
            eg=[p for p in (agent.approval.escalate_to or []) if p.startswith("S")]
            if agent.approval
            else [],
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
        metadata=forms.metadata(t=inv.tenant, a=agent.id, v=agent.version),
    )
    await client.views_open(trigger_id=inv.trigger_id, view=view)
    return None


async def cmd_persona(rt: SlackRuntime, inv: Invocation, client: AsyncWebClient) -> Answer:
    name = inv.name("persona NAME")
    await require_admin(rt, inv.tenant, inv.user)
    agent = await agent_named(rt, inv.tenant, name)
    persona = await run_sync(rt.container.personas.get, inv.tenant, agent.persona_id)
    agents = await run_sync(_all_agents, rt, inv.tenant)
    used_by = [a.name for a in agents if a.persona_id == persona.id]
    view = forms.persona_form(
        agent=agent,
        persona=persona,
        used_by=used_by,
        metadata=forms.metadata(t=inv.tenant, a=agent.id, p=persona.id),
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


# -- form submissions ---------------------------------------------------------------------


def _metadata(view: dict[str, Any]) -> dict[str, Any]:
    try:
        meta = json.loads(view.get("private_metadata") or "")
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) and isinstance(meta.get("t"), str) else {}


def _values(view: dict[str, Any]) -> dict[str, Any]:
    return dict((view.get("state") or {}).get("values") or {})


def _unprefixed(errors: list[FieldError]) -> list[FieldError]:
    """Config-document paths (`agents.0.persona`) back to field paths (`persona`)."""
    out = []
    for e in errors:
        loc = e.loc
        if len(loc) >= 2 and loc[0] in ("agents", "personas") and isinstance(loc[1], int):
            loc = loc[2:]
        out.append(FieldError(loc, e.msg))
    return out


def register(app: AsyncApp, rt: SlackRuntime) -> None:
    c = rt.container

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
        )
        rt.spawn(run(rt, inv, respond, client), name=f"/agent {subcommand}")

    async def admin_or_errors(
        ack: AsyncAck, body: dict[str, Any], meta: dict[str, Any], block: str
    ) -> bool:
        if not meta:
            await ack(response_action="errors", errors={block: STALE_FORM})
            return False
        if not await may_configure(rt, meta["t"], body["user"]["id"]):
            await ack(response_action="errors", errors={block: NOT_ADMIN})
            return False
        return True

    async def on_create(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        meta = _metadata(view)
        if not await admin_or_errors(ack, body, meta, "name"):
            return
        tenant, actor = meta["t"], f"slack:{body['user']['id']}"
        form = forms.read_agent_form(_values(view), creating=True)
        errors: dict[str, str] = {}
        persona: PersonaSpec | None = None
        if form.new_persona is not None:
            try:
                persona = PersonaSpec.model_validate(form.new_persona)
            except ValidationError as exc:
                errors |= forms.form_errors(
                    field_errors(exc), forms.NEW_PERSONA_FIELDS, fallback="persona_role"
                )
            if not form.new_persona["role"]:
                errors.setdefault(
                    "persona_role", "Say what the new persona is, e.g. Sales assistant."
                )
        try:
            spec = AgentSpec.model_validate(form.agent)
        except ValidationError as exc:
            errors = (
                forms.form_errors(field_errors(exc), forms.AGENT_FIELDS, fallback="name") | errors
            )
        if errors:
            await ack(response_action="errors", errors=errors)
            return

        def create() -> None:
            if persona is None:
                c.agents.create(tenant, spec, actor=actor)
                return
            # A new persona and its agent are written together or not at all.
            if any(p.name == persona.name for p in _all_personas(rt, tenant)):
                raise Conflict(
                    f"a persona named {persona.name!r} already exists: choose it in the list"
                )
            try:
                c.agents.get_by_name(tenant, spec.name)
            except NotFound:
                pass
            else:
                raise Conflict(f"an agent named {spec.name!r} already exists")
            c.config.apply(tenant, ConfigDocument(personas=[persona], agents=[spec]), actor=actor)

        try:
            await run_sync(create)
        except ValidationFailed as exc:
            await ack(
                response_action="errors",
                errors=forms.form_errors(
                    _unprefixed(exc.errors), forms.AGENT_FIELDS, fallback="name"
                ),
            )
            return
        except Conflict as exc:
            block = "persona" if exc.detail.startswith("a persona") else "name"
            await ack(response_action="errors", errors={block: exc.detail})
            return
        await ack(
            response_action="update",
            view=forms.done_view(
                "Agent created",
                f"✅ *{spec.name}* is ready.\nMake it answer in a channel with "
                f"`/agent use {spec.name}` there, or everywhere with "
                f"`/agent use {spec.name} --default`.",
            ),
        )

    async def on_edit(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        meta = _metadata(view)
        if not await admin_or_errors(ack, body, meta, "name"):
            return
        form = forms.read_agent_form(_values(view), creating=False)
        fields = dict(form.agent)
        fields["approvers"] = [*fields["approvers"], *(meta.get("g") or [])]
        if meta.get("eg") and fields.get("approval"):  # user groups the form cannot show
            approval = fields["approval"]
            approval["escalate_to"] = [*(approval.get("escalate_to") or []), *meta["eg"]]
        try:
            patch = AgentPatch.model_validate(fields)
        except ValidationError as exc:
            errors = forms.form_errors(field_errors(exc), forms.AGENT_FIELDS, fallback="name")
            await ack(response_action="errors", errors=errors)
            return
        try:
            agent = await run_sync(
                lambda: c.agents.update(
                    meta["t"],
                    str(meta.get("a")),
                    patch,
                    actor=f"slack:{body['user']['id']}",
                    expected_version=meta.get("v"),
                )
            )
        except ValidationFailed as exc:
            errors = forms.form_errors(exc.errors, forms.AGENT_FIELDS, fallback="name")
            await ack(response_action="errors", errors=errors)
            return
        except (Conflict, PreconditionFailed, NotFound) as exc:
            await ack(response_action="errors", errors={"name": _stale_or(exc)})
            return
        await ack(
            response_action="update",
            view=forms.done_view(
                "Agent saved", f"✅ Saved *{agent.name}* (version {agent.version})."
            ),
        )

    async def on_skills(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        meta = _metadata(view)
        if not await admin_or_errors(ack, body, meta, "skills"):
            return
        try:
            chosen = SkillList.model_validate({"skills": forms.read_skills_form(_values(view))})
        except ValidationError as exc:
            errors = forms.form_errors(field_errors(exc), forms.SKILLS_FIELDS, fallback="skills")
            await ack(response_action="errors", errors=errors)
            return
        try:
            agent = await run_sync(
                lambda: c.agents.set_skills(
                    meta["t"],
                    str(meta.get("a")),
                    chosen.skills,
                    actor=f"slack:{body['user']['id']}",
                    expected_version=meta.get("v"),
                )
            )
        except ValidationFailed as exc:
            errors = forms.form_errors(exc.errors, forms.SKILLS_FIELDS, fallback="skills")
            await ack(response_action="errors", errors=errors)
            return
        except (PreconditionFailed, NotFound) as exc:
            await ack(response_action="errors", errors={"skills": _stale_or(exc)})
            return
        names = ", ".join(f"`{n}`" for n in agent.skills) or "none"
        await ack(
            response_action="update",
            view=forms.done_view("Skills saved", f"✅ *{agent.name}* now has skills: {names}."),
        )

    async def on_persona(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        meta = _metadata(view)
        if not await admin_or_errors(ack, body, meta, "role"):
            return
        try:
            patch = PersonaPatch.model_validate(forms.read_persona_form(_values(view)))
        except ValidationError as exc:
            errors = forms.form_errors(field_errors(exc), forms.PERSONA_FIELDS, fallback="role")
            await ack(response_action="errors", errors=errors)
            return
        try:
            persona = await run_sync(c.personas.update, meta["t"], str(meta.get("p")), patch)
        except ValidationFailed as exc:
            errors = forms.form_errors(exc.errors, forms.PERSONA_FIELDS, fallback="role")
            await ack(response_action="errors", errors=errors)
            return
        except NotFound as exc:
            await ack(response_action="errors", errors={"role": _stale_or(exc)})
            return
        await ack(
            response_action="update",
            view=forms.done_view("Persona saved", f"✅ Saved persona `{persona.name}`."),
        )

    app.command(ui.COMMAND)(on_command)
    app.view(forms.CREATE_MODAL)(_guarded(on_create, "name"))
    app.view(forms.EDIT_MODAL)(_guarded(on_edit, "name"))
    app.view(forms.SKILLS_MODAL)(_guarded(on_skills, "skills"))
    app.view(forms.PERSONA_MODAL)(_guarded(on_persona, "role"))


Submission = Callable[[Any, dict[str, Any], dict[str, Any]], Awaitable[None]]


def _guarded(handler: Submission, block: str) -> Submission:
    """An unexpected failure becomes a message on the form, not Slack's generic error."""

    async def guarded(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        try:
            await handler(ack, body, view)
        except Exception:
            log.exception("%s submission failed", view.get("callback_id"))
            await ack(
                response_action="errors",
                errors={block: "Something went wrong on my side. Please try again."},
            )

    return guarded


def _stale_or(exc: CosmoError) -> str:
    if isinstance(exc, PreconditionFailed):
        return "Someone changed this agent after you opened the form. " + STALE_FORM
    if isinstance(exc, NotFound):
        return "It was deleted after you opened the form."
    return exc.detail
