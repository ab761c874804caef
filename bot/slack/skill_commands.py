"""`/agent skill new | edit NAME | test NAME {json}`: skills configured from Slack.

`new` and `edit` open the skill form (`bot.slack.skill_form`); its submission is validated
by `SkillSpec` / `SkillPatch` and saved by `SkillService`, the same path as `POST` and
`PATCH /skills` (so the operator's rules on built-ins, MCP servers and secret variables,
and the JSON-Schema keyword check, apply alike).

`test` runs a *read* skill once with the given arguments, built by the same
`SkillFactory` and run by the same `Skill.execute` (schema check, egress guard, timeouts)
as during a turn, and shows the result to the caller only. Action skills are never run
from here: their calls become outputs someone approves.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack import admin_forms as forms
from bot.slack import skill_form
from bot.slack.admins import may_configure
from bot.slack.form_submission import (
    META_SKILL,
    META_TENANT,
    Form,
    FormErrors,
    Submission,
    View,
    form_handler,
)
from bot.slack.invocation import NOT_ADMIN, Answer, Invocation, Refusal, text_answer
from bot.slack.runtime import SlackRuntime
from bot.slack.text import escape, truncate
from core.concurrency import run_sync
from core.errors import CosmoError, NotFound, ValidationFailed
from core.schemas.skill import SkillKind, SkillPatch, SkillSpec
from core.schemas.validation import field_errors
from core.schemas.views import SkillView
from core.skills.policy import UnusableSkill
from core.skills.runtime import SkillContext

USAGE = "`/agent skill new`, `/agent skill edit NAME` or `/agent skill test NAME {json}`"
RESULT_CHARS = 2_800  # a section's text is 3,000 at most


def _names(rt: SlackRuntime) -> tuple[list[str], list[str]]:
    policy = rt.container.skill_factory.policy
    return sorted(policy.builtins), sorted(policy.mcp_servers)


def _skill_name(inv: Invocation, usage: str) -> str:
    if len(inv.args) < 2:
        raise Refusal(f"Which skill? Usage: `/agent skill {usage}`.")
    return inv.args[1].strip("`'\"").lower()


async def _skill(rt: SlackRuntime, tenant: str, name: str) -> SkillView:
    try:
        return await run_sync(rt.container.skills.get, tenant, name)
    except NotFound:
        raise Refusal(f"There is no skill named `{escape(name)}`.") from None


async def cmd_skill(rt: SlackRuntime, inv: Invocation, client: AsyncWebClient) -> Answer:
    action = inv.args[0].lower() if inv.args else ""
    if action not in ("new", "edit", "test"):
        raise Refusal(f"Usage: {USAGE}.")
    if not await may_configure(rt, inv.tenant, inv.user):
        raise Refusal(NOT_ADMIN)
    if action == "test":
        return await _test(rt, inv)
    skill = None
    if action == "edit":
        skill = await _skill(rt, inv.tenant, _skill_name(inv, "edit NAME"))
    builtins, servers = _names(rt)
    meta: dict[str, Any] = {META_TENANT: inv.tenant}
    if skill is not None:
        meta[META_SKILL] = skill.name
    view = skill_form.skill_form(
        skill=skill, builtins=builtins, mcp_servers=servers, metadata=forms.metadata(meta)
    )
    await client.views_open(trigger_id=inv.trigger_id, view=view)
    return None


def _arguments(inv: Invocation) -> dict[str, Any]:
    """The JSON after `skill test NAME` (empty: `{}`), from the text as typed."""
    words = inv.text.split(None, 3)
    raw = words[3].strip() if len(words) > 3 else ""
    # Slack's clients may turn straight quotes into curly ones as people type.
    raw = raw.replace("“", '"').replace("”", '"').strip("`")
    if not raw:
        return {}
    try:
        arguments = json.loads(raw)
    except ValueError as exc:
        raise Refusal(f"The arguments are not valid JSON ({escape(str(exc))}).") from None
    if not isinstance(arguments, dict):
        raise Refusal('The arguments must be a JSON object, e.g. `{"query": "pricing"}`.')
    return arguments


async def _test(rt: SlackRuntime, inv: Invocation) -> Answer:
    c = rt.container
    name = _skill_name(inv, "test NAME {json}")
    arguments = _arguments(inv)
    try:
        spec, version = await run_sync(c.skills.runnable, inv.tenant, name)
    except NotFound:
        raise Refusal(f"There is no skill named `{escape(name)}`.") from None
    if isinstance(spec, UnusableSkill):
        raise Refusal(f"`{escape(name)}` cannot run here: {escape(spec.reason)}")
    if spec.kind is not SkillKind.READ:
        raise Refusal(
            f"`{escape(name)}` is an action skill: it never runs from here. Its calls become "
            "outputs that someone approves in a conversation."
        )
    ctx = SkillContext(
        tenant_id=inv.tenant,
        agent_id="",
        agent_name="skill test",
        session_id=None,
        user_id=inv.user,
        user_name=None,
    )
    try:
        skill = c.skill_factory.build(spec, version)
        result = await skill.execute(arguments, ctx)
    except CosmoError as exc:  # bad arguments, a failed call: its message is safe to show
        return text_answer(
            f"⚠️ `{escape(name)}` failed:\n```{escape(truncate(exc.detail, RESULT_CHARS))}```"
        )
    mark = "⚠️ returned an error" if result.is_error else "✅ answered"
    body = truncate(result.content, RESULT_CHARS) or "(nothing)"
    return text_answer(f"`{escape(name)}` {mark} (only you see this):\n```{escape(body)}```")


def register(app: AsyncApp, rt: SlackRuntime) -> None:
    c = rt.container

    def parse_new(sub: Submission) -> SkillSpec:
        try:
            fields = skill_form.read_skill_form(sub.values, creating=True)
        except skill_form.FormInvalid as exc:
            raise FormErrors(exc.errors) from None
        try:
            return SkillSpec.model_validate(fields)
        except ValidationError as exc:
            raise FormErrors(skill_form.skill_errors(field_errors(exc), fallback="name")) from None

    def create(sub: Submission, spec: SkillSpec) -> View:
        try:
            skill = c.skills.create(sub.tenant, spec)
        except ValidationFailed as exc:
            raise FormErrors(skill_form.skill_errors(exc.errors, fallback="name")) from None
        readable = skill.kind == SkillKind.READ
        return forms.done_view(
            "Skill created",
            f"✅ Skill `{skill.name}` is ready. Give it to an agent with `/agent skills AGENT`"
            + (f"; try it with `/agent skill test {skill.name} {{...}}`." if readable else "."),
        )

    def parse_edit(sub: Submission) -> tuple[str, SkillPatch]:
        name = sub.id(META_SKILL)
        try:
            stored = c.skills.get(sub.tenant, name)
        except NotFound:
            raise FormErrors({"kind": "It was deleted after you opened the form."}) from None
        try:
            fields = skill_form.read_skill_form(sub.values, creating=False, stored=stored)
        except skill_form.FormInvalid as exc:
            raise FormErrors(exc.errors) from None
        try:
            return name, SkillPatch.model_validate(fields)
        except ValidationError as exc:
            raise FormErrors(skill_form.skill_errors(field_errors(exc), fallback="kind")) from None

    def edit(sub: Submission, parsed: tuple[str, SkillPatch]) -> View:
        name, patch = parsed
        try:
            skill = c.skills.update(sub.tenant, name, patch)
        except ValidationFailed as exc:
            raise FormErrors(skill_form.skill_errors(exc.errors, fallback="kind")) from None
        return forms.done_view("Skill saved", f"✅ Saved skill `{skill.name}`.")

    def read_and_edit(sub: Submission, _: None) -> View:
        # Reading the form back needs the stored skill (what the form does not show stays
        # as it is): database work, so it runs in `run`'s worker thread, not in `parse`.
        return edit(sub, parse_edit(sub))

    def nothing_to_parse(_: Submission) -> None:
        return None

    app.view(skill_form.NEW_MODAL)(
        form_handler(rt, Form(skill_form.SKILL_FIELDS, "name", parse_new, create, what="skill"))
    )
    app.view(skill_form.EDIT_MODAL)(
        form_handler(
            rt,
            Form(skill_form.SKILL_FIELDS, "kind", nothing_to_parse, read_and_edit, what="skill"),
        )
    )
