"""The persona form's preview: the persona as Claude reads it, and its "Update preview"
button, which renders what is typed (not saved yet) after the ack and shows it with
`views.update` (inputs keep their text: their block and action ids do not change)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack import admin_forms as forms
from bot.slack.admins import may_configure
from bot.slack.form_submission import META_AGENT, META_TENANT, NOT_ADMIN, read_metadata
from bot.slack.runtime import SlackRuntime
from bot.slack.text import escape
from core.concurrency import run_sync
from core.errors import NotFound
from core.personas.prompt import PromptContext, render_persona
from core.schemas.persona import PersonaSpec
from core.schemas.validation import field_errors

log = logging.getLogger("cosmo.slack.persona_preview")
_VIEW_KEYS = ("type", "callback_id", "private_metadata", "title", "submit", "close", "blocks")


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


def _with_preview(view: dict[str, Any], text: str) -> dict[str, Any]:
    updated = {k: view[k] for k in _VIEW_KEYS if k in view}
    updated["blocks"] = [
        forms.preview_block(text) if b.get("block_id") == forms.PERSONA_PREVIEW_TEXT else b
        for b in view.get("blocks") or []
    ]
    return updated


def register(app: AsyncApp, rt: SlackRuntime) -> None:
    async def on_click(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        rt.spawn(run(body, client), name="persona preview")

    async def run(body: dict[str, Any], client: AsyncWebClient) -> None:
        try:
            text = await outcome(rt, body)
        except Exception:
            log.exception("persona preview failed")
            text = "⚠️ Something went wrong on my side. Please try again."
        view = body.get("view") or {}
        try:
            await client.views_update(view_id=view.get("id"), view=_with_preview(view, text))
        except SlackApiError as exc:
            log.info("could not show the persona preview: %s", exc.response.get("error"))

    app.action(forms.PERSONA_PREVIEW)(on_click)
