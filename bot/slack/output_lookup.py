"""`/agent outputs [NAME] [--pending]` and `/agent audit OUTPUT_ID`: what agents proposed,
where it stands, and who did what to it.

Outputs carry what people asked for in their own conversations, so not everyone sees every
output: agent admins do; everyone else sees the outputs they asked for and those of the
agents they approve for. The rule is the same for the list and for one output's audit.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from slack_sdk.errors import SlackApiError

from bot.slack.admin_blocks import context, section
from bot.slack.admins import may_configure
from bot.slack.approvals import expand_principals
from bot.slack.blocks import Blocks
from bot.slack.invocation import Answer, Invocation, Refusal, agent_named, all_agents
from bot.slack.mrkdwn import date, link, mention, one_line
from bot.slack.runtime import SlackRuntime
from bot.slack.text import escape
from core.approvals.audit import AuditEntry
from core.concurrency import run_sync
from core.errors import NotFound
from core.outputs.port import Output, OutputFilter, OutputStatus

log = logging.getLogger("cosmo.slack.outputs")

SHOWN = 15  # one message stays well under Slack's 50 blocks
SCANNED = 200  # the newest outputs a non-admin's list is picked from
AUDIT_SHOWN = 40

_STATUS = {
    OutputStatus.PENDING: "⏳ pending",
    OutputStatus.APPROVED: "✅ approved",
    OutputStatus.EXECUTED: "✅ done",
    OutputStatus.MANUAL: "✅ manual follow-up",
    OutputStatus.EXECUTION_FAILED: "⚠️ failed to run",
    OutputStatus.REJECTED: "❌ rejected",
    OutputStatus.EXPIRED: "⌛ expired",
}


class _Viewer:
    """Which outputs one person may look at (see the module docstring)."""

    def __init__(self, rt: SlackRuntime, tenant: str, user: str) -> None:
        self.rt, self.tenant, self.user = rt, tenant, user
        self.admin: bool | None = None
        self._approves: dict[str, bool] = {}

    async def may_see(self, output: Output) -> bool:
        if output.requested_by == self.user:
            return True
        if self.admin is None:
            self.admin = await may_configure(self.rt, self.tenant, self.user)
        if self.admin:
            return True
        if output.agent_id not in self._approves:
            self._approves[output.agent_id] = await self._approver_of(output.agent_id)
        return self._approves[output.agent_id]

    async def _approver_of(self, agent_id: str) -> bool:
        try:
            agent = await run_sync(self.rt.container.agents.get, self.tenant, agent_id)
        except NotFound:
            return False
        return self.user in await expand_principals(self.rt, self.tenant, agent.approvers)


# -- /agent outputs -----------------------------------------------------------------------


async def cmd_outputs(rt: SlackRuntime, inv: Invocation, client: Any) -> Answer:
    c = rt.container
    agent = await agent_named(rt, inv.tenant, inv.name("outputs")) if inv.args else None
    pending = "--pending" in inv.flags
    filters = OutputFilter(
        agent_id=agent.id if agent else None, status=OutputStatus.PENDING if pending else None
    )
    viewer = _Viewer(rt, inv.tenant, inv.user)
    shown: list[Output] = []
    cursor: str | None = None
    scanned = 0
    while len(shown) < SHOWN and scanned < SCANNED:
        page = await run_sync(c.outputs.list, inv.tenant, filters, cursor=cursor, limit=50)
        for output in page.items:
            if len(shown) < SHOWN and await viewer.may_see(output):
                shown.append(output)
        scanned += len(page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    names = {a.id: a.name for a in await run_sync(all_agents, rt, inv.tenant)}
    links = await _permalinks(rt, client, shown)
    what = ("pending outputs" if pending else "outputs") + (f" of {agent.name}" if agent else "")
    return outputs_message(what, shown, names, links, everything=bool(viewer.admin))


async def _permalinks(rt: SlackRuntime, client: Any, outputs: list[Output]) -> dict[str, str]:
    """A link to each output's first approval message (the thread's or the approval
    channel's copy), where Slack still has it."""

    async def one(output: Output) -> tuple[str, str | None]:
        refs = await run_sync(rt.container.output_messages.of, output.tenant_id, output.id)
        if not refs:
            return output.id, None
        try:
            found = await client.chat_getPermalink(channel=refs[0].channel, message_ts=refs[0].ts)
        except SlackApiError as exc:
            log.info("no permalink for output %s: %s", output.id, exc.response.get("error"))
            return output.id, None
        return output.id, found.get("permalink")

    pairs = await asyncio.gather(*(one(o) for o in outputs))
    return {output_id: url for output_id, url in pairs if url}


def outputs_message(
    what: str,
    outputs: list[Output],
    agent_names: dict[str, str],
    links: dict[str, str],
    *,
    everything: bool,
) -> tuple[str, Blocks]:
    scope = "" if everything else " you asked for or approve"
    if not outputs:
        text = f"No {what}{scope} yet."
        return text, [section(text)]
    text = f"The latest {len(outputs)} {what}{scope}"
    blocks: Blocks = [section(f"*{escape(text)}*, newest first:")]
    for o in outputs:
        agent = escape(agent_names.get(o.agent_id, "a deleted agent"))
        where = link(links[o.id], "approval message") if o.id in links else "no Slack message"
        lines = [
            f"{_STATUS.get(o.status, o.status.value)} · `{escape(o.skill)}` by *{agent}* · {where}",
            one_line(o.preview, 140),
            f"`{o.id}` · asked by {mention(o.requested_by)} · {date(o.created_at)}",
        ]
        blocks.append(section("\n".join(lines)))
    blocks.append(context("`/agent audit OUTPUT_ID` shows who did what to one of them."))
    return text, blocks


# -- /agent audit -------------------------------------------------------------------------


async def cmd_audit(rt: SlackRuntime, inv: Invocation, client: Any) -> Answer:
    if not inv.args:
        raise Refusal(
            "Which output? Usage: `/agent audit OUTPUT_ID` (ids are in `/agent outputs`)."
        )
    output_id = inv.args[0].strip("`'\"")
    c = rt.container
    unknown = Refusal(f"There is no output `{escape(output_id)}` that you may see.")
    try:
        output = await run_sync(c.outputs.get, inv.tenant, output_id)
    except NotFound:
        raise unknown from None
    if not await _Viewer(rt, inv.tenant, inv.user).may_see(output):
        raise unknown  # the same answer as "no such output": ids are not an oracle
    entries = await run_sync(c.audit.for_output, inv.tenant, output.id)
    return audit_message(output, entries)


def audit_message(output: Output, entries: list[AuditEntry]) -> tuple[str, Blocks]:
    text = f"Audit of {output.id}: {len(entries)} entries"
    blocks: Blocks = [
        section(
            f"*Audit of `{output.id}`* · `{escape(output.skill)}` · "
            f"{_STATUS.get(output.status, output.status.value)}"
        )
    ]
    lines = [_audit_line(e) for e in entries[-AUDIT_SHOWN:]]
    if len(entries) > AUDIT_SHOWN:
        lines.insert(0, f"_…{len(entries) - AUDIT_SHOWN} earlier entries: see the REST audit._")
    # Several lines per section: 40 entries stay within one message's 50 blocks.
    for start in range(0, len(lines), 10):
        blocks.append(section("\n".join(lines[start : start + 10])))
    if not entries:
        blocks.append(section("_No entries._"))
    blocks.append(
        context("Entries form a hash chain; `cosmo audit verify` checks it has not been altered.")
    )
    return text, blocks


def _audit_line(e: AuditEntry) -> str:
    how = " · ".join(
        part
        for part in (
            f"via {escape(e.via)}" if e.via else "",
            f"key {escape(e.key_name)}" if e.key_name else "",
            f"({escape(e.identity)})" if e.identity and e.identity != "verified" else "",
            f"rev {e.revision}" if e.revision else "",
        )
        if part
    )
    outcome = "" if e.outcome in ("ok", "applied") else f" → {escape(e.outcome)}"
    detail = f" — {one_line(e.detail, 120)}" if e.detail else ""
    return (
        f"{e.seq}. *{escape(e.action)}*{outcome} by {mention(e.actor)}"
        f"{' · ' + how if how else ''} · {date(e.created_at)}{detail}"
    )
