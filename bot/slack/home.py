"""The App Home: what waits for the person's approval (with working Approve / Reject
buttons), what they asked for lately, the agents in the workspace and today's usage.

Published when the Home tab opens (`app_home_opened`), and again for the person who just
decided an output, so the item they acted on leaves their list.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp

from bot.slack import admin_blocks as ui
from bot.slack.admins import may_configure
from bot.slack.review_blocks import (
    AGES,
    ANY,
    APPROVE_SHOWN,
    FILTER_AGE,
    FILTER_AGENT,
    FILTER_SKILL,
    ReviewFilters,
    bulk_result_text,
    read_shown,
)
from bot.slack.runtime import SlackRuntime
from core.approvals.grants import GrantView
from core.approvals.policy import Actor, check_may_decide
from core.concurrency import run_sync
from core.errors import CosmoError, OutputAlreadyDecided
from core.limits.quotas import TOKENS, utc_day
from core.outputs.port import Output, OutputFilter, OutputStatus, SlackStatus
from core.schemas.views import AgentView

log = logging.getLogger("cosmo.slack.home")

PENDING_SHOWN = 10
BULK_MAX = 20  # a bulk click decides at most this many (Home shows PENDING_SHOWN)
RECENT_SHOWN = 8
RECENT_WINDOW = timedelta(days=7)
USAGE_AGENTS = 10
PAGE = 200
MAX_PAGES = 5
_SLACK_USER = re.compile(r"^[UW][A-Z0-9]{2,20}$")


@dataclass(frozen=True)
class _Stored:
    day: str
    now: datetime
    agents: list[AgentView]
    pending: list[Output]
    recent: list[Output]
    usage: list[ui.AgentUsageToday]
    unrouted: int
    grants: list[GrantView]


def _outputs(rt: SlackRuntime, tenant: str, filters: OutputFilter) -> list[Output]:
    """Oldest first, at most MAX_PAGES pages."""
    found: list[Output] = []
    cursor = None
    for _ in range(MAX_PAGES):
        page = rt.container.outputs.list(tenant, filters, cursor=cursor, limit=PAGE)
        found += page.items
        cursor = page.next_cursor
        if cursor is None:
            break
    return found


def _gather(
    rt: SlackRuntime, tenant: str, user: str, filters: ReviewFilters, can_configure: bool
) -> _Stored:
    c = rt.container
    now = c.quotas.clock()
    day = utc_day(now)
    agents = c.agents.list(tenant, limit=PAGE).items
    older_than = filters.older_than
    pending = _outputs(
        rt,
        tenant,
        OutputFilter(
            status=OutputStatus.PENDING,
            agent_id=filters.agent_id,
            skill=filters.skill,
            created_before=now - older_than if older_than else None,
        ),
    )
    week = _outputs(rt, tenant, OutputFilter(created_after=now - RECENT_WINDOW))
    recent = [o for o in week if o.requested_by == user]
    recent.sort(key=lambda o: o.created_at, reverse=True)
    # Counted from the outputs themselves: the quota counter moves only when a limit is set.
    start_of_day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    today = Counter(o.agent_id for o in week if o.created_at >= start_of_day)
    usage = []
    for agent in [a for a in agents if a.is_active][:USAGE_AGENTS]:
        totals = c.sessions.usage(tenant, agent_id=agent.id, day=day)
        usage.append(
            ui.AgentUsageToday(
                agent=agent,
                turns=totals.turns,
                tokens=c.quotas.used(tenant, agent.id, TOKENS, day),
                cost_usd=totals.cost_usd,
                outputs=today[agent.id],
            )
        )
    unrouted = OutputFilter(status=OutputStatus.PENDING, slack_status=SlackStatus.UNROUTED)
    unrouted_count = len(c.outputs.list(tenant, unrouted, cursor=None, limit=PAGE).items)
    # Admins see every grant in force (they may revoke any); others those they made.
    grants = c.grants.active(tenant, granted_by=None if can_configure else user)
    return _Stored(day, now, agents, pending, recent[:RECENT_SHOWN], usage, unrouted_count, grants)


async def home_data(
    rt: SlackRuntime, tenant: str, user: str, filters: ReviewFilters | None = None
) -> ui.HomeData:
    filters = filters or ReviewFilters()
    can_configure = await may_configure(rt, tenant, user)
    stored = await run_sync(_gather, rt, tenant, user, filters, can_configure)
    by_id = {a.id: a for a in stored.agents}
    actor = Actor(user, "slack", verified=True)
    mine = []
    for output in reversed(stored.pending):  # newest first
        agent = by_id.get(output.agent_id)
        if agent is None:
            continue
        try:
            await check_may_decide(agent, output, actor, "approve", rt.directory)
        except CosmoError:
            continue
        mine.append(output)
    return ui.HomeData(
        user_id=user,
        day=stored.day,
        pending=mine[:PENDING_SHOWN],
        pending_total=len(mine),
        recent=stored.recent,
        agents=stored.agents,
        usage=stored.usage,
        can_configure=can_configure,
        filters=filters,
        skills=sorted({skill for agent in stored.agents for skill in agent.skills}),
        unrouted=stored.unrouted if can_configure else 0,
        grants=stored.grants,
    )


async def publish_home(
    rt: SlackRuntime, tenant: str, user: str, filters: ReviewFilters | None = None
) -> None:
    # One publish at a time per user, each reading the queue once it holds the lock: the
    # view published last is the one computed last (a burst of decisions republishes the
    # Home once per decision, and an earlier, staler view must not land after a later one).
    async with rt.message_lock(f"home:{tenant}:{user}"):
        data = await home_data(rt, tenant, user, filters)
        client = await rt.clients.for_tenant(tenant)
        await client.views_publish(user_id=user, view=ui.home_view(data))


def filters_of_view(view: dict[str, Any] | None) -> ReviewFilters:
    """The filters a home view was showing (its selects' state, else its metadata)."""
    view = view or {}
    values = (view.get("state") or {}).get("values") or {}
    if values:
        return ReviewFilters.from_state(values)
    try:
        meta = json.loads(view.get("private_metadata") or "{}")
        age = str(meta.get("age") or ANY)
        return ReviewFilters(meta.get("agent"), meta.get("skill"), age if age in AGES else ANY)
    except (ValueError, AttributeError):
        return ReviewFilters()


EDIT_AUDIENCE = 20


async def _edit_audience(rt: SlackRuntime, output: Output) -> list[str]:
    """Who sees an edited output in their Home: its editor and the agent's approvers named
    as users (group members see it when they next open their Home)."""
    users = [output.edits[-1].edited_by] if output.edits else []
    try:
        agent = await run_sync(rt.container.agents.get, output.tenant_id, output.agent_id)
        users += list(agent.approvers)
    except CosmoError:
        pass
    return list(dict.fromkeys(u for u in users if _SLACK_USER.match(u)))[:EDIT_AUDIENCE]


async def approve_shown(
    rt: SlackRuntime,
    tenant: str,
    user: str,
    shown: list[tuple[str, int]],
    filters: ReviewFilters,
) -> None:
    """ "Approve the N shown": each output is its own first-write-wins decision on the
    revision the viewer saw; the viewer is told (in the app's DM) which were applied and
    which someone else decided first, and their Home is published again."""
    actor = Actor(user, "slack", verified=True)
    applied: list[Output] = []
    elsewhere: list[tuple[str, str | None]] = []
    refused: list[str] = []
    for output_id, revision in shown[:BULK_MAX]:
        try:
            result = await rt.container.approvals.decide(
                tenant, output_id, "approve", actor, revision=revision
            )
        except OutputAlreadyDecided as exc:
            elsewhere.append((output_id, exc.decided_by))
            continue
        except CosmoError as exc:
            refused.append(f"{output_id}: {exc.detail}")  # escaped where it is shown
            continue
        if result.applied:
            applied.append(result.output)
        elif result.output.decided_by != user:
            elsewhere.append((output_id, result.output.decided_by))
    client = await rt.clients.for_tenant(tenant)
    await client.chat_postMessage(channel=user, text=bulk_result_text(applied, elsewhere, refused))
    await publish_home(rt, tenant, user, filters)


def register(app: AsyncApp, rt: SlackRuntime) -> None:
    async def on_home_opened(body: dict[str, Any], event: dict[str, Any]) -> None:
        if event.get("tab", "home") != "home" or not event.get("user"):
            return
        tenant = rt.tenant_for(body.get("team_id"))
        rt.spawn(publish_home(rt, tenant, event["user"]), name=f"home:{event['user']}")

    async def on_change(output: Output) -> None:
        decider = output.decided_by
        if decider and _SLACK_USER.match(decider) and output.decision_via == "slack":
            rt.spawn(publish_home(rt, output.tenant_id, decider), name=f"home:{decider}")
        if output.status == OutputStatus.PENDING and output.edits:
            # An edit: the Homes listing this output show buttons for the old revision.
            for user in await _edit_audience(rt, output):
                rt.spawn(publish_home(rt, output.tenant_id, user), name=f"home:{user}")

    async def on_filter(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        user = (body.get("user") or {}).get("id")
        if not user:
            return
        tenant = rt.tenant_for((body.get("team") or {}).get("id"))
        filters = filters_of_view(body.get("view"))
        rt.spawn(publish_home(rt, tenant, user, filters), name=f"home:{user}")

    async def on_approve_shown(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        user = (body.get("user") or {}).get("id")
        if not user:
            return
        tenant = rt.tenant_for((body.get("team") or {}).get("id"))
        shown = read_shown(str(body["actions"][0].get("value") or ""))
        filters = filters_of_view(body.get("view"))
        rt.spawn(approve_shown(rt, tenant, user, shown, filters), name=f"approve-shown:{user}")

    app.event("app_home_opened")(on_home_opened)
    for action_id in (FILTER_AGENT, FILTER_SKILL, FILTER_AGE):
        app.action(action_id)(on_filter)
    app.action(APPROVE_SHOWN)(on_approve_shown)
    rt.container.approvals.on_change(on_change)
