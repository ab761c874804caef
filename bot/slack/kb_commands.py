"""`/agent kb new|list|show`: knowledge bases from Slack, and the Remove button of a document.

    /agent kb new NAME [description…]   create one (agent admins), validated as REST's
    /agent kb list                      every knowledge base, with document and chunk counts
    /agent kb show NAME                 its documents: status, chunks, a Remove button each

Reading is for everyone, as REST's reader role; creating and removing are for agent admins
(`bot.slack.admins`). Both go through `KnowledgeService`, the REST routes' service, with the
same checks: `parse_spec` for a new knowledge base, `delete_document` for a removal. Adding
documents is "drop a file in" (`bot.slack.file_drop`).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack import kb_blocks as ui
from bot.slack.admins import may_configure
from bot.slack.blocks import Blocks
from bot.slack.errors import slack_message
from bot.slack.invocation import NOT_ADMIN, Invocation, Refusal, require_admin, text_answer
from bot.slack.runtime import SlackRuntime
from bot.slack.text import escape
from core.concurrency import run_sync
from core.errors import CosmoError, NotFound, ValidationFailed
from core.knowledge.schemas import DocumentView, KnowledgeBaseView
from core.knowledge.service import parse_spec

log = logging.getLogger("cosmo.slack.kb")

USAGE = "`/agent kb new NAME [description]`, `/agent kb list` or `/agent kb show NAME`"
PAGE = 200


def _name(args: list[str], usage: str) -> str:
    if not args:
        raise Refusal(f"Which knowledge base? Usage: `/agent kb {usage}` (see `/agent kb list`).")
    return args[0].strip("`'\"")


async def _knowledge_base(rt: SlackRuntime, tenant: str, name: str) -> KnowledgeBaseView:
    try:
        return await run_sync(rt.container.knowledge.get_by_name, tenant, name)
    except NotFound:
        raise Refusal(
            f"There is no knowledge base named `{escape(name)}`. See `/agent kb list`."
        ) from None


def _field_errors(exc: ValidationFailed) -> str:
    lines = []
    for error in exc.errors:
        loc = [str(part) for part in error.loc if part != "body"]
        lines.append(f"• `{escape('.'.join(loc) or 'name')}`: {escape(error.msg)}")
    return "Nothing was created:\n" + "\n".join(lines)


async def cmd_kb(rt: SlackRuntime, inv: Invocation, client: AsyncWebClient) -> tuple[str, Blocks]:
    action = inv.args[0].lower() if inv.args else "list"
    rest = list(inv.args[1:])
    if action == "new":
        return await kb_new(rt, inv, rest)
    if action == "list":
        return await kb_list(rt, inv)
    if action == "show":
        return await kb_show(rt, inv.tenant, inv.user, _name(rest, "show NAME"))
    raise Refusal(f"I don't know `/agent kb {escape(action)}`. Try {USAGE}.")


async def kb_new(rt: SlackRuntime, inv: Invocation, args: list[str]) -> tuple[str, Blocks]:
    name = _name(args, "new NAME [description]")
    await require_admin(rt, inv.tenant, inv.user)
    description = " ".join(args[1:])
    try:
        spec = parse_spec({"name": name, "description": description})
        kb = await run_sync(rt.container.knowledge.create, inv.tenant, spec)
    except ValidationFailed as exc:
        return text_answer(_field_errors(exc))
    log.info("slack:%s created knowledge base %s", inv.user, kb.name)
    return text_answer(
        f"✅ Created the knowledge base *{escape(kb.name)}*. Add documents by sharing PDF, "
        "Markdown, text, HTML or CSV files with me in a DM, then let agents use it with "
        f"`/agent edit AGENT`. `/agent kb show {escape(kb.name)}` lists what it holds."
    )


async def kb_list(rt: SlackRuntime, inv: Invocation) -> tuple[str, Blocks]:
    page = await run_sync(lambda: rt.container.knowledge.list(inv.tenant, limit=PAGE))
    can_configure = await may_configure(rt, inv.tenant, inv.user)
    return ui.kb_list(page.items, can_configure=can_configure)


async def kb_show(
    rt: SlackRuntime, tenant: str, user: str, name: str, *, notice: str | None = None
) -> tuple[str, Blocks]:
    kb = await _knowledge_base(rt, tenant, name)
    return await _details(rt, tenant, user, kb, notice=notice)


async def _details(
    rt: SlackRuntime, tenant: str, user: str, kb: KnowledgeBaseView, *, notice: str | None
) -> tuple[str, Blocks]:
    page = await run_sync(
        lambda: rt.container.knowledge.documents(tenant, kb.id, limit=ui.MAX_DOCUMENTS)
    )
    can_configure = await may_configure(rt, tenant, user)
    return ui.kb_details(
        kb,
        page.items,
        can_configure=can_configure,
        more=page.next_cursor is not None,
        notice=notice,
    )


def register(app: AsyncApp, rt: SlackRuntime) -> None:
    async def on_remove(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        rt.spawn(remove(rt, body, respond), name="kb document remove")

    app.action(ui.REMOVE)(on_remove)


async def remove(rt: SlackRuntime, body: dict[str, Any], respond: AsyncRespond) -> None:
    """Remove a document (the confirm dialog was Slack's), then show the list again."""
    try:
        clicked = json.loads(body["actions"][0]["value"])
        kb_id, doc_id = str(clicked["k"]), str(clicked["d"])
    except (KeyError, IndexError, TypeError, ValueError):
        return
    tenant = rt.tenant_for((body.get("team") or {}).get("id"))
    user = str((body.get("user") or {}).get("id") or "")
    if not await may_configure(rt, tenant, user):
        await respond(text=NOT_ADMIN, replace_original=False, response_type="ephemeral")
        return
    c = rt.container
    try:
        kb = await run_sync(c.knowledge.get, tenant, kb_id)
    except NotFound:
        await respond(text="That knowledge base was deleted.", replace_original=True)
        return
    try:
        doc: DocumentView = await run_sync(c.knowledge.document, tenant, kb.id, doc_id)
        await run_sync(c.knowledge.delete_document, tenant, kb.id, doc_id)
    except NotFound:
        notice = "That document was removed already."
    except CosmoError as exc:
        await respond(text=slack_message(exc), replace_original=False, response_type="ephemeral")
        return
    else:
        log.info("slack:%s removed document %s from knowledge base %s", user, doc.name, kb.name)
        notice = f"🗑️ <@{user}> removed *{escape(doc.name)}*."
    kb = await run_sync(c.knowledge.get, tenant, kb.id)  # counts after the removal
    text, blocks = await _details(rt, tenant, user, kb, notice=notice)
    await respond(text=text, blocks=blocks, replace_original=True)
