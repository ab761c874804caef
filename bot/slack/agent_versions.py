"""`/agent history NAME`, `/agent rollback NAME VERSION`, `/agent delete NAME [--force]`.

Every saved change of an agent is a version (`core.agent.service`). History is for
everyone who may see the agent; rolling back and deleting are for agent admins and never
happen from the command alone: the command answers with what would change and a button
whose confirm dialog says it once more. The click is checked again (admin, the agent still
at the version the message showed), because an ephemeral message can sit for hours.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond

from bot.slack.admin_blocks import context, section
from bot.slack.blocks import Blocks
from bot.slack.errors import slack_message
from bot.slack.invocation import (
    Answer,
    Invocation,
    Refusal,
    agent_named,
    require_admin,
    text_answer,
)
from bot.slack.mrkdwn import date, mention, one_line
from bot.slack.runtime import SlackRuntime
from bot.slack.text import escape, truncate
from core.concurrency import run_sync
from core.errors import AgentBusy, CosmoError, NotFound
from core.schemas.views import AgentVersionView, AgentView

log = logging.getLogger("cosmo.slack.versions")

ROLLBACK = "agent_rollback"
DELETE = "agent_delete"
SHOWN = 20  # versions listed; older ones are a REST page away


# -- history ------------------------------------------------------------------------------


async def cmd_history(rt: SlackRuntime, inv: Invocation, client: Any) -> Answer:
    agent = await agent_named(rt, inv.tenant, inv.name("history NAME"))
    page = await run_sync(rt.container.agents.versions, inv.tenant, agent.id, limit=SHOWN)
    return history_message(agent, page.items, more=page.next_cursor is not None)


def history_message(
    agent: AgentView, versions: list[AgentVersionView], *, more: bool
) -> tuple[str, Blocks]:
    name = escape(agent.name)
    text = f"History of {agent.name}: {len(versions)} version(s)"
    blocks: Blocks = [section(f"*History of {name}* (newest first)")]
    for v in versions:
        line = (
            f"*v{v.version}* · {one_line(v.change or 'changed', 200)}\n"
            f"{mention(v.created_by)} · {date(v.created_at)}"
        )
        if v.version == agent.version:
            blocks.append(section(line + "  ← _current_"))
            continue
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": line},
                "accessory": _rollback_button(agent, v.version),
            }
        )
    if more:
        blocks.append(context("Older versions: `GET /api/v1/agents/NAME/versions` pages on."))
    blocks.append(
        context(
            f"Roll back with the buttons or `/agent rollback {name} VERSION`: the old settings "
            "become a new version, so a rollback can itself be rolled back."
        )
    )
    return text, blocks


# -- rollback -----------------------------------------------------------------------------


async def cmd_rollback(rt: SlackRuntime, inv: Invocation, client: Any) -> Answer:
    usage = "rollback NAME VERSION"
    agent = await agent_named(rt, inv.tenant, inv.name(usage))
    await require_admin(rt, inv.tenant, inv.user)
    if len(inv.args) < 2 or not inv.args[1].lstrip("v").isdigit():
        raise Refusal(
            f"Which version? Usage: `/agent {usage}` — `/agent history {escape(agent.name)}` "
            "lists them."
        )
    version = int(inv.args[1].lstrip("v"))
    if version == agent.version:
        raise Refusal(f"*{escape(agent.name)}* is at version {version} already.")
    if not 1 <= version < agent.version:
        raise Refusal(
            f"*{escape(agent.name)}* has versions 1 to {agent.version}. "
            f"`/agent history {escape(agent.name)}` lists them."
        )
    text = f"Roll {agent.name} back to version {version}?"
    return text, [
        section(
            f"Roll *{escape(agent.name)}* back from v{agent.version} to *v{version}*? Its "
            f"settings become those of v{version}, saved as v{agent.version + 1}."
        ),
        {"type": "actions", "elements": [_rollback_button(agent, version)]},
    ]


def _rollback_button(agent: AgentView, version: int) -> dict[str, Any]:
    return {
        "type": "button",
        "action_id": ROLLBACK,
        "text": {"type": "plain_text", "text": f"Roll back to v{version}"},
        "value": json.dumps({"a": agent.id, "v": version, "at": agent.version}),
        "confirm": {
            "title": {"type": "plain_text", "text": "Roll back?"},
            "text": {
                "type": "mrkdwn",
                "text": f"*{escape(agent.name)}* gets the settings of v{version} "
                f"(saved as v{agent.version + 1}). Conversations in progress use them "
                "from their next message.",
            },
            "confirm": {"type": "plain_text", "text": "Roll back"},
            "deny": {"type": "plain_text", "text": "Cancel"},
        },
    }


async def rollback_clicked(rt: SlackRuntime, tenant: str, user: str, value: str) -> str:
    c = rt.container
    ask = _decode(value, "v")
    await require_admin(rt, tenant, user)
    try:
        agent = await run_sync(c.agents.get, tenant, ask["a"])
    except NotFound:
        return "⚠️ That agent no longer exists: nothing was rolled back."
    if agent.version != ask["at"]:
        return (
            f"⚠️ *{escape(agent.name)}* changed since this message (now v{agent.version}): "
            f"nothing was rolled back. Run `/agent history {escape(agent.name)}` again."
        )
    rolled = await run_sync(c.agents.rollback, tenant, agent.id, ask["v"], actor=f"slack:{user}")
    log.info("agent %s rolled back to v%d by %s", agent.name, ask["v"], user)
    return (
        f"✅ *{escape(rolled.name)}* is back to the settings of v{ask['v']}, "
        f"saved as v{rolled.version} by {mention(user)}."
    )


# -- delete -------------------------------------------------------------------------------


async def cmd_delete(rt: SlackRuntime, inv: Invocation, client: Any) -> Answer:
    agent = await agent_named(rt, inv.tenant, inv.name("delete NAME [--force]"))
    await require_admin(rt, inv.tenant, inv.user)
    force = "--force" in inv.flags
    name = escape(agent.name)
    warning = (
        " Turns still running are stopped and fail." if force else " Refused while it is answering."
    )
    return f"Delete {agent.name}?", [
        section(
            f"Delete *{name}* for good? Its configuration, versions, channel bindings and "
            f"memory settings go; past conversations and outputs stay on record.{warning}"
        ),
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "action_id": DELETE,
                    "style": "danger",
                    "text": {"type": "plain_text", "text": f"Delete {truncate(agent.name, 60)}"},
                    "value": json.dumps({"a": agent.id, "f": force}),
                    "confirm": {
                        "title": {"type": "plain_text", "text": "Delete the agent?"},
                        "text": {
                            "type": "mrkdwn",
                            "text": f"*{name}* stops answering everywhere. This cannot be undone.",
                        },
                        "confirm": {"type": "plain_text", "text": "Delete"},
                        "deny": {"type": "plain_text", "text": "Keep it"},
                        "style": "danger",
                    },
                }
            ],
        },
    ]


async def delete_clicked(rt: SlackRuntime, tenant: str, user: str, value: str) -> str:
    c = rt.container
    ask = _decode(value, "f")
    await require_admin(rt, tenant, user)
    try:
        agent = await run_sync(c.agents.get, tenant, ask["a"])
    except NotFound:
        return "That agent was deleted already."
    try:
        await run_sync(c.agents.delete, tenant, agent.id, force=bool(ask["f"]))
    except AgentBusy as busy:
        return (
            f"⚠️ *{escape(agent.name)}* is answering right now ({busy.running} turn(s) pending "
            f"or running): nothing was deleted. Try again when it is done, or run "
            f"`/agent delete {escape(agent.name)} --force`."
        )
    log.info("agent %s deleted by %s (force=%s)", agent.name, user, bool(ask["f"]))
    return f"🗑️ *{escape(agent.name)}* was deleted by {mention(user)}."


def _decode(value: str, key: str) -> dict[str, Any]:
    try:
        ask = json.loads(value)
    except ValueError:
        ask = None
    if not isinstance(ask, dict) or not isinstance(ask.get("a"), str) or key not in ask:
        raise Refusal("⚠️ This button is out of date. Run the command again.")
    return ask


# -- wiring -------------------------------------------------------------------------------


def register(app: AsyncApp, rt: SlackRuntime) -> None:
    async def answer(work: Any, respond: AsyncRespond) -> None:
        try:
            text = await work
        except Refusal as refusal:
            text = refusal.text
        except CosmoError as exc:
            text = slack_message(exc, prefix="Nothing changed: ")
        text, blocks = text_answer(text)
        await respond(text=text, blocks=blocks, replace_original=True)

    def clicked(handler: Any) -> Any:
        async def on_click(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
            await ack()
            user = (body.get("user") or {}).get("id")
            actions = body.get("actions") or [{}]
            if not user:
                return
            tenant = rt.tenant_for((body.get("team") or {}).get("id"))
            work = handler(rt, tenant, user, str(actions[0].get("value") or ""))
            rt.spawn(answer(work, respond), name=f"{handler.__name__}:{user}")

        return on_click

    app.action(ROLLBACK)(clicked(rollback_clicked))
    app.action(DELETE)(clicked(delete_clicked))
