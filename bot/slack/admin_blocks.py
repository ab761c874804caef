"""Block Kit for `/agent` answers and the App Home. Pure functions, no I/O.

`blocks.py` keeps the approval messages (the App Home reuses their buttons' action ids),
`admin_forms.py` the agent forms. Text that came from people is escaped before it goes
into mrkdwn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.slack.blocks import Blocks, skill_title, slack_date
from bot.slack.lifecycle_blocks import REVOKE_GRANT
from bot.slack.mrkdwn import from_markdown, mention, principal
from bot.slack.review_blocks import ReviewFilters, queue_blocks
from bot.slack.text import escape, truncate
from core.approvals.grants import GrantView
from core.memory.port import MemoryRecord
from core.outputs.port import Output, OutputStatus
from core.outputs.stats import SkillStats
from core.schemas.views import AgentView, PersonaView, SkillView

View = dict[str, Any]

COMMAND = "/agent"

# Slack's limits that shape these renderers.
MESSAGE_BLOCKS_MAX = 50
VIEW_BLOCKS_MAX = 100

_STATUS = {
    OutputStatus.PENDING: "⏳ waiting for approval",
    OutputStatus.APPROVED: "✅ approved",
    OutputStatus.EXECUTED: "✅ approved and done",
    OutputStatus.MANUAL: "✅ approved, manual follow-up",
    OutputStatus.EXECUTION_FAILED: "⚠️ approved, running it failed",
    OutputStatus.REJECTED: "❌ rejected",
    OutputStatus.EXPIRED: "⌛ expired",
}
_WHY = {
    "channel": "answers in this channel",
    "default": "answers here (workspace default)",
    "only": "answers here (the only active agent)",
}


# -- small pieces -------------------------------------------------------------------------


def plain(text: str, limit: int = 75) -> dict[str, Any]:
    return {"type": "plain_text", "text": truncate(text, limit)}


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": truncate(text, 3_000)}}


def context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": truncate(text, 2_000)}]}


def _header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": plain(text, 150)}


def _divider() -> dict[str, Any]:
    return {"type": "divider"}


def code_list(names: Sequence[str], empty: str = "none") -> str:
    return ", ".join(f"`{escape(n)}`" for n in names) if names else f"_{empty}_"


def _limit(value: int | None, unit: str) -> str:
    return f"{value:,} {unit}/day" if value is not None else "unlimited"


def _tokens(count: int) -> str:
    if count >= 1_000_000:
        return f"{count / 1_000_000:.1f}M"
    if count >= 1_000:
        return f"{count / 1_000:.1f}k"
    return str(count)


def _status(agent: AgentView) -> str:
    return "active" if agent.is_active else "⏸ inactive"


# -- /agent answers -----------------------------------------------------------------------


#: `/agent help`, grouped: (heading, [(usage, what it does)]). A test checks that every
#: subcommand here has a handler and every handler is listed.
HELP: list[tuple[str, list[tuple[str, str]]]] = [
    (
        "Talking to agents",
        [
            ("list", "the agents here, and which one answers in this channel"),
            ("show NAME", "an agent's configuration and figures"),
            ("memory", "what this channel's agent remembers about you"),
            ("memory clear", "make this channel's agent forget you"),
            ("end", "end your latest conversation in this channel"),
        ],
    ),
    (
        "Looking things up",
        [
            ("outputs [NAME] [--pending]", "recent outputs, with links to their approvals"),
            ("audit OUTPUT_ID", "who proposed, edited, decided and ran an output"),
            ("history NAME", "an agent's versions: who changed what, when"),
            ("kb list", "knowledge bases, with document and chunk counts"),
            ("kb show NAME", "a knowledge base's documents (admins may remove them)"),
            ("help", "this list"),
        ],
    ),
    (
        "Agents (admins)",
        [
            ("create", "a new agent (opens a form)"),
            ("edit NAME", "model, approvers, webhook (with a test event), knowledge, limits"),
            ("persona NAME", "its persona: role, tone, instructions, variables"),
            ("skills NAME", "which skills it may use"),
            ("use NAME", "make NAME answer in this channel"),
            ("use NAME --default", "…and wherever no agent is chosen, and in DMs"),
            ("rollback NAME VERSION", "go back to an earlier version (asks first)"),
            ("delete NAME [--force]", "delete an agent (asks first)"),
        ],
    ),
    (
        "Skills and knowledge (admins)",
        [
            ("skill new", "a new skill: a built-in, an HTTP request or an MCP tool (a form)"),
            ("skill edit NAME", "change a skill"),
            ("skill test NAME {json}", "run a read skill once; only you see the result"),
            ("kb new NAME [description]", "a new knowledge base"),
            (
                "(share a file with me)",
                "a PDF, Markdown, text, HTML or CSV file in a DM (or a thread that mentions me) "
                "goes into the knowledge base you pick",
            ),
        ],
    ),
]


def help_message(*, can_configure: bool) -> tuple[str, Blocks]:
    blocks: Blocks = []
    for heading, entries in HELP:
        lines = [
            (f"`{COMMAND} {usage}`" if not usage.startswith("(") else f"_{usage[1:-1]}_")
            + f" — {what}"
            for usage, what in entries
        ]
        blocks.append(section(f"*{heading}*\n" + "\n".join(lines)))
    who = (
        "You may change agents."
        if can_configure
        else "Workspace admins and owners, and the people in `COSMO_SLACK_ADMINS`, "
        "may change agents."
    )
    blocks.append(
        context(
            f"{who} `end` ends the most recent conversation you started in this channel "
            "(slash commands cannot tell which thread you are in)."
        )
    )
    return "Cosmo agents: /agent help lists every command", blocks


def agent_list(
    agents: Sequence[AgentView], *, answering_id: str | None, why: str
) -> tuple[str, Blocks]:
    """Every agent with persona, skills and state; marks the one that answers here."""
    if not agents:
        text = "No agents yet. An agent admin can create one with `/agent create`."
        return text, [section(text)]
    shown = list(agents)[: MESSAGE_BLOCKS_MAX - 3]
    blocks: Blocks = [_header(f"Agents ({len(agents)})")]
    for agent in shown:
        here = f"  ← _{_WHY[why]}_" if agent.id == answering_id and why in _WHY else ""
        lines = [f"*{escape(agent.name)}* · {_status(agent)}{here}"]
        if agent.description:
            lines.append(escape(truncate(agent.description, 300)))
        lines.append(f"Persona `{escape(agent.persona)}` · Skills: {code_list(agent.skills)}")
        blocks.append(section("\n".join(lines)))
    if len(shown) < len(agents):
        blocks.append(context(f"…and {len(agents) - len(shown)} more."))
    if why == "ambiguous":
        blocks.append(
            context(
                "No agent is chosen for this channel: a mention here is answered with a "
                "request to pick one. An agent admin can pick one with `/agent use NAME`."
            )
        )
    names = ", ".join(a.name for a in shown)
    return f"Agents ({len(agents)}): {names}", blocks


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def stats_line(figures: SkillStats) -> str:
    """`draft_email`: 12 proposed · 8 approved unchanged · 2 with edits · … · median 14 min."""
    parts = [
        f"{figures.proposed} proposed",
        f"{figures.approved_unchanged} approved unchanged",
        f"{figures.approved_with_edits} approved with edits",
        f"{figures.rejected} rejected",
        f"{figures.expired} expired",
    ]
    if figures.pending:
        parts.append(f"{figures.pending} pending")
    if figures.median_seconds_to_decision is not None:
        parts.append(f"median {_duration(figures.median_seconds_to_decision)} to decide")
    return f"• `{escape(figures.skill)}`: " + " · ".join(parts)


def agent_details(
    agent: AgentView,
    *,
    persona: PersonaView | None,
    skills: Sequence[SkillView],
    model: str,
    stats: Sequence[SkillStats] = (),
) -> tuple[str, Blocks]:
    """`/agent show NAME`: the configuration an admin set, without secrets."""
    kinds = {s.name: s for s in skills}

    def skill_line(name: str) -> str:
        skill = kinds.get(name)
        if skill is None:
            return f"`{escape(name)}`"
        how = "read" if skill.kind == "read" else "action, needs approval"
        if skill.kind != "read" and skill.is_automatable:
            how += ", runs once approved"
        if skill.problem is not None:
            how = "unusable: the agent answers without it"
        return f"`{escape(name)}` ({how})"

    persona_text = f"`{escape(agent.persona)}`"
    if persona is not None and persona.role:
        persona_text += f" — {escape(truncate(persona.role, 200))}"
    approvers = (
        ", ".join(principal(a) for a in agent.approvers)
        if agent.approvers
        else "anyone in the workspace"
    )
    if not agent.allow_self_approval:
        approvers += " (not the person who asked)"
    fields = [
        f"*Persona*\n{persona_text}",
        f"*Model*\n`{escape(agent.model or model)}`" + ("" if agent.model else " (default)"),
        f"*Memory*\n{'on' if agent.memory_enabled else 'off'}",
        f"*Status*\n{_status(agent)} · version {agent.version}",
        f"*Approvers*\n{approvers}",
        "*Approval channel*\n"
        + (f"<#{agent.approval_channel}>" if agent.approval_channel else "_the thread only_"),
        "*Limits*\n"
        f"{_limit(agent.limits.daily_output_limit, 'outputs')}, "
        f"{_limit(agent.limits.daily_token_budget, 'tokens')}",
        "*Webhook*\n" + ("configured" if agent.webhook else "_none_"),
    ]
    skill_text = ", ".join(skill_line(n) for n in agent.skills) or "_none_"
    blocks: Blocks = [
        _header(agent.name),
        *([section(escape(truncate(agent.description, 1_000)))] if agent.description else []),
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]},
        section(f"*Skills*\n{skill_text}"),
        section(f"*Approval lifecycle*\n{lifecycle_text(agent)}"),
    ]
    broken = [s for s in skills if s.problem is not None]
    if broken:
        lines = [f"• `{escape(s.name)}`: {escape(truncate(s.problem or '', 500))}" for s in broken]
        blocks.append(section("*:warning: Skills that cannot run here*\n" + "\n".join(lines)))
    if agent.knowledge_bases:
        blocks.append(section(f"*Knowledge bases*\n{code_list(agent.knowledge_bases)}"))
    if stats:
        days = stats[0].window_days
        lines = [stats_line(f) for f in stats]
        blocks.append(
            section(f"*How reviewers treated its actions* (last {days} days)\n" + "\n".join(lines))
        )
    return f"Agent {agent.name}", blocks


def memory_list(
    agent: AgentView, records: Sequence[MemoryRecord], *, shown: int = 20
) -> tuple[str, Blocks]:
    name = escape(agent.name)
    if not records:
        text = f"*{name}* doesn't remember anything about you."
        blocks: Blocks = [section(text)]
    else:
        lines = [
            f"• {from_markdown(truncate(r.text, 280))} _({slack_date(r.created_at)})_"
            for r in records[:shown]
        ]
        more = f"\n…and {len(records) - shown} more." if len(records) > shown else ""
        blocks = [
            section(f"*What {name} remembers about you* ({len(records)})"),
            section("\n".join(lines) + more),
            context("Make it forget all of this with `/agent memory clear`."),
        ]
        text = f"{agent.name} remembers {len(records)} thing(s) about you."
    if not agent.memory_enabled:
        blocks.append(context(f"Memory is off for *{name}*: it remembers nothing new."))
    return text, blocks


# -- App Home -----------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentUsageToday:
    agent: AgentView
    turns: int
    tokens: int
    cost_usd: float
    outputs: int


@dataclass(frozen=True)
class HomeData:
    """Everything the App Home shows one person (gathered by `bot.slack.home`)."""

    user_id: str
    day: str
    pending: list[Output]
    pending_total: int
    recent: list[Output]
    agents: list[AgentView]
    usage: list[AgentUsageToday]
    can_configure: bool
    filters: ReviewFilters = field(default_factory=ReviewFilters)
    skills: list[str] = field(default_factory=list)
    """Skills of the viewer's pending outputs (the skill filter's options)."""
    unrouted: int = 0
    """Pending outputs of this workspace flagged `unrouted` (shown to admins)."""
    grants: list[GrantView] = field(default_factory=list)
    """Grants in force the viewer may revoke (their own; every one for admins)."""


def _agent_name(agents: Sequence[AgentView], agent_id: str) -> str:
    return next((a.name for a in agents if a.id == agent_id), "a deleted agent")


def grant_blocks(data: HomeData) -> Blocks:
    """Grants in force ("Approve and allow for this thread"), each with its Revoke button."""
    if not data.grants:
        return []
    title = "Grants in force" if data.can_configure else "Grants you made"
    found: Blocks = [_divider(), section(f"*{title}* ({len(data.grants)})")]
    for grant in data.grants:
        line = (
            f"*{escape(skill_title(grant.skill))}* by "
            f"*{escape(_agent_name(data.agents, grant.agent_id))}* with the same arguments, "
            f"in one thread · granted by {mention(grant.granted_by)} "
            f"{slack_date(grant.created_at)} · `{grant.id}`"
        )
        found.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": line},
                "accessory": {
                    "type": "button",
                    "action_id": REVOKE_GRANT,
                    "text": {"type": "plain_text", "text": "Revoke"},
                    "value": grant.id,
                    "style": "danger",
                },
            }
        )
    return found


def home_view(data: HomeData) -> View:
    agents = data.agents
    blocks: Blocks = [
        _header("Cosmo agents"),
        context(
            f"Hi {mention(data.user_id)}: what waits for your approval, what you asked "
            "for lately, and the agents in this workspace. Type `/agent help` anywhere for "
            "commands."
        ),
        _divider(),
    ]
    if data.can_configure and data.unrouted:
        blocks.append(
            section(
                f":warning: *{data.unrouted} pending output(s) reached nobody in Slack* "
                "(`unrouted`: their agent has no approval channel and no approvers). Give "
                "those agents approvers or an approval channel (`/agent edit NAME`), or "
                "decide them over the API (`GET /api/v1/outputs?slack_status=unrouted`)."
            )
        )
    blocks += queue_blocks(
        data.pending,
        data.pending_total,
        filters=data.filters,
        agents=agents,
        skills=data.skills,
    )
    blocks += grant_blocks(data)
    blocks += [_divider(), section("*What you asked for lately*")]
    if not data.recent:
        blocks.append(context("Nothing in the last week."))
    else:
        lines = [
            f"{_STATUS[o.status]} · *{escape(skill_title(o.skill))}* by "
            f"*{escape(_agent_name(agents, o.agent_id))}* · {slack_date(o.created_at)}"
            for o in data.recent
        ]
        blocks.append(section("\n".join(lines)))
    blocks += [_divider(), section(f"*Agents* ({len(agents)})")]
    if not agents:
        blocks.append(
            context(
                "No agents yet."
                + (" Create one with `/agent create`." if data.can_configure else "")
            )
        )
    shown = agents[:15]
    for agent in shown:
        line = f"*{escape(agent.name)}* · {_status(agent)}"
        if agent.description:
            line += f"\n{escape(truncate(agent.description, 200))}"
        line += f"\nPersona `{escape(agent.persona)}` · Skills: {code_list(agent.skills)}"
        blocks.append(section(line))
    if len(agents) > len(shown):
        blocks.append(context(f"…and {len(agents) - len(shown)} more: `/agent list`."))
    if data.can_configure and agents:
        blocks.append(
            context(
                "You may change agents: `/agent edit NAME`, `/agent skills NAME`, "
                "`/agent persona NAME`, `/agent use NAME`."
            )
        )
    blocks += [_divider(), section(f"*Today's usage* ({data.day}, UTC)")]
    if not data.usage:
        blocks.append(context("No agents, no usage."))
    else:
        fields = [
            {
                "type": "mrkdwn",
                "text": f"*{escape(u.agent.name)}*\n{u.turns} turns · "
                f"{_tokens(u.tokens)} tokens · ${u.cost_usd:.2f}\n"
                f"{u.outputs} outputs"
                + (
                    f" of {u.agent.limits.daily_output_limit}"
                    if u.agent.limits.daily_output_limit is not None
                    else ""
                ),
            }
            for u in data.usage[:10]
        ]
        blocks.append({"type": "section", "fields": fields})
    return {
        "type": "home",
        "private_metadata": data.filters.to_metadata(),
        "blocks": blocks[:VIEW_BLOCKS_MAX],
    }


def lifecycle_text(agent: AgentView) -> str:
    """The agent's `approval:` defaults in a line (skills may override them)."""
    p = agent.approval
    if p is None:
        return "one approval; expires by the operator's default"
    parts = [
        f"{p.required_approvals or 1} approval{'s' if (p.required_approvals or 1) > 1 else ''}"
    ]
    if p.expires_after:
        then = "then expires"
        if p.on_expiry == "escalate":
            targets = ", ".join(principal(t) for t in p.escalate_to or []) or "nobody"
            then = f"then escalates once to {targets}"
        parts.append(f"decide within {escape(p.expires_after)}, {then}")
    if p.remind_after:
        parts.append(
            f"reminders after {escape(p.remind_after)}"
            + (f", then every {escape(p.remind_every)}" if p.remind_every else "")
        )
    return "; ".join(parts)
