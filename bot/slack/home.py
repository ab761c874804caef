"""The App Home: what waits for the person's approval (with working Approve / Reject
buttons), what they asked for lately, the agents in the workspace and today's usage.

Published when the Home tab opens (`app_home_opened`), and again for the person who just
decided an output, so the item they acted on leaves their list.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from bot.slack import admin_blocks as ui
from bot.slack.admins import may_configure
from bot.slack.runtime import SlackRuntime
from core.approvals.policy import Actor, check_may_decide
from core.concurrency import run_sync
from core.errors import CosmoError
from core.limits.quotas import OUTPUTS, TOKENS, utc_day
from core.outputs.port import Output, OutputFilter, OutputStatus
from core.schemas.views import AgentView

log = logging.getLogger("cosmo.slack.home")

PENDING_SHOWN = 10
RECENT_SHOWN = 8
RECENT_WINDOW = timedelta(days=7)
USAGE_AGENTS = 10
PAGE = 200
MAX_PAGES = 5
_SLACK_USER = re.compile(r"^[UW][A-Z0-9]{2,20}$")


@dataclass(frozen=True)
class _Stored:
    day: str
    agents: list[AgentView]
    pending: list[Output]
    recent: list[Output]
    usage: list[ui.AgentUsageToday]


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


def _gather(rt: SlackRuntime, tenant: str, user: str) -> _Stored:
    c = rt.container
    now = c.quotas.clock()
    day = utc_day(now)
    agents = c.agents.list(tenant, limit=PAGE).items
    pending = _outputs(rt, tenant, OutputFilter(status=OutputStatus.PENDING))
    recent = [
        o
        for o in _outputs(rt, tenant, OutputFilter(created_after=now - RECENT_WINDOW))
        if o.requested_by == user
    ]
    recent.sort(key=lambda o: o.created_at, reverse=True)
    usage = []
    for agent in [a for a in agents if a.is_active][:USAGE_AGENTS]:
        totals = c.sessions.usage(tenant, agent_id=agent.id, day=day)
        usage.append(
            ui.AgentUsageToday(
                agent=agent,
                turns=totals.turns,
                tokens=c.quotas.used(tenant, agent.id, TOKENS, day),
                cost_usd=totals.cost_usd,
                outputs=c.quotas.used(tenant, agent.id, OUTPUTS, day),
            )
        )
    return _Stored(day, agents, pending, recent[:RECENT_SHOWN], usage)


async def home_data(rt: SlackRuntime, tenant: str, user: str) -> ui.HomeData:
    stored = await run_sync(_gather, rt, tenant, user)
    by_id = {a.id: a for a in stored.agents}
    actor = Actor(user, "slack", verified=True)
    mine = []
    for output in stored.pending:
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
        can_configure=await may_configure(rt, tenant, user),
    )


async def publish_home(rt: SlackRuntime, tenant: str, user: str) -> None:
    data = await home_data(rt, tenant, user)
    client = await rt.clients.for_tenant(tenant)
    await client.views_publish(user_id=user, view=ui.home_view(data))


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


def register(app: Any, rt: SlackRuntime) -> None:
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

    app.event("app_home_opened")(on_home_opened)
    rt.container.approvals.on_change(on_change)
