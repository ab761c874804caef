"""The persona form's preview: the persona as Claude reads it, and its "Update preview"
button, which renders what is typed (not saved yet) after the ack and shows it with
`views.update` (inputs keep their text: their block and action ids do not change)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from slack_bolt.async_app import AsyncApp

from bot.slack import admin_forms as forms
from bot.slack.admins import may_configure
from bot.slack.form_submission import (
    META_AGENT,
    META_TENANT,
    read_metadata,
    register_modal_button,
)
from bot.slack.invocation import NOT_ADMIN
from bot.slack.runtime import SlackRuntime
from bot.slack.text import escape
from core.concurrency import run_sync
from core.errors import NotFound
from core.personas.prompt import PromptContext, render_persona
from core.schemas.persona import PersonaSpec
from core.schemas.validation import field_errors


def preview_text(spec: PersonaSpec, agent_name: str, today: datetime) -> str:
    """mrkdwn: the rendered persona, for the admin looking at the form."""
    rendered = render_persona(spec, PromptContext(agent_name=agent_name, today=today.date()))
    return (
        f"*Preview* — what Claude reads for *{escape(agent_name)}* today. "
        "`{{user_name}}` and `{{channel}}` stay general here: who is talking (you, now) "
        f"comes with each message, fenced.\n```{escape(rendered)}```"
    )


def spec_of(name: str, fields: dict[str, Any]) -> PersonaSpec:
    return PersonaSpec.model_validate({"name": name, **fields})


async def outcome(rt: SlackRuntime, body: dict[str, Any]) -> str:
    view = body.get("view") or {}
    meta = read_metadata(view)
    if not meta:
        return "⚠️ This form is out of date. Close it and run the command again."
    tenant = meta[META_TENANT]
    if not await may_configure(rt, tenant, body["user"]["id"]):
        return "⚠️ " + NOT_ADMIN
    c = rt.container
    try:
        agent = await run_sync(c.agents.get, tenant, str(meta.get(META_AGENT)))
    except NotFound:
        return "⚠️ The agent was deleted after you opened the form."
    values = (view.get("state") or {}).get("values") or {}
    try:
        fields = forms.read_persona_form(values)
        if "instructions" not in fields:  # too long for the form: as stored
            persona = await run_sync(c.personas.get, tenant, agent.persona_id)
            fields["instructions"] = persona.instructions
        spec = spec_of("preview", fields)
    except forms.RowsInvalid as exc:
        return "⚠️ " + escape("; ".join(exc.errors.values()))
    except ValidationError as exc:
        problems = "; ".join(f"{e.path}: {e.msg}" for e in field_errors(exc))
        return f"⚠️ Not valid yet: {escape(problems)}"
    return preview_text(spec, agent.name, c.quotas.clock().astimezone(UTC))


def register(app: AsyncApp, rt: SlackRuntime) -> None:
    register_modal_button(
        app, rt, forms.PERSONA_PREVIEW, outcome, forms.preview_block, "persona preview"
    )
