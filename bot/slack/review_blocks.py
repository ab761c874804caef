"""Block Kit for the review queue in the App Home: the viewer's pending outputs, filters
(agent, skill, age) as select menus, and "Approve the N shown" with a confirm dialog that
lists them. Pure functions, no I/O (`bot.slack.home` gathers and publishes).

Each item keeps the approval message's own buttons (`blocks.decision_buttons`), so the
approval listeners decide them; the bulk button names every output and the revision it
showed, and each is decided on its own (first write wins, item by item).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from bot.slack.blocks import Blocks, decision_buttons, skill_title
from bot.slack.mrkdwn import bold, date, from_markdown, mention
from bot.slack.text import escape, truncate, truncate_escaped
from core.outputs.port import Output
from core.schemas.views import AgentView

FILTER_AGENT = "review_filter_agent"
FILTER_SKILL = "review_filter_skill"
FILTER_AGE = "review_filter_age"
FILTERS_BLOCK = "review_filters"
APPROVE_SHOWN = "review_approve_shown"
ANY = "any"
#: Age filter values: outputs waiting at least this long.
AGES = {
    ANY: ("Any age", None),
    "1h": ("Waiting 1 hour or more", timedelta(hours=1)),
    "1d": ("Waiting 1 day or more", timedelta(days=1)),
    "7d": ("Waiting 7 days or more", timedelta(days=7)),
}
MAX_OPTIONS = 100  # Slack's limit for a static select
CONFIRM_CHARS = 300  # Slack's limit for a confirm dialog's text
BUTTON_VALUE_CHARS = 2_000  # Slack's limit for a button's value


@dataclass(frozen=True)
class ReviewFilters:
    """What the viewer narrowed the queue to; `None` is "any"."""

    agent_id: str | None = None
    skill: str | None = None
    age: str = ANY

    @property
    def older_than(self) -> timedelta | None:
        return AGES.get(self.age, AGES[ANY])[1]

    def to_metadata(self) -> str:
        return json.dumps({"agent": self.agent_id, "skill": self.skill, "age": self.age})

    @classmethod
    def from_state(cls, values: dict[str, Any]) -> ReviewFilters:
        """From a home view's `state.values` (the three selects' current choices)."""
        chosen = values.get(FILTERS_BLOCK, {})

        def pick(action_id: str) -> str | None:
            option = (chosen.get(action_id) or {}).get("selected_option") or {}
            value = option.get("value")
            return None if value in (None, ANY) else str(value)

        age = pick(FILTER_AGE)
        return cls(pick(FILTER_AGENT), pick(FILTER_SKILL), age if age in AGES else ANY)


def _option(value: str, text: str) -> dict[str, Any]:
    return {"text": {"type": "plain_text", "text": truncate(text, 75)}, "value": value}


def _select(
    action_id: str, placeholder: str, options: list[dict[str, Any]], chosen: str | None
) -> dict[str, Any]:
    options = options[:MAX_OPTIONS]
    element: dict[str, Any] = {
        "type": "static_select",
        "action_id": action_id,
        "placeholder": {"type": "plain_text", "text": placeholder},
        "options": options,
    }
    initial = next((o for o in options if o["value"] == (chosen or ANY)), None)
    if initial is not None:
        element["initial_option"] = initial
    return element


def filter_block(
    filters: ReviewFilters, agents: Sequence[AgentView], skills: Sequence[str]
) -> dict[str, Any]:
    agent_options = [_option(ANY, "Any agent")] + [_option(a.id, a.name) for a in agents]
    skill_options = [_option(ANY, "Any skill")] + [_option(s, skill_title(s)) for s in skills]
    age_options = [_option(value, label) for value, (label, _) in AGES.items()]
    return {
        "type": "actions",
        "block_id": FILTERS_BLOCK,
        "elements": [
            _select(FILTER_AGENT, "Agent", agent_options, filters.agent_id),
            _select(FILTER_SKILL, "Skill", skill_options, filters.skill),
            _select(FILTER_AGE, "Age", age_options, filters.age),
        ],
    }


def _agent_name(agents: Sequence[AgentView], agent_id: str) -> str:
    return next((a.name for a in agents if a.id == agent_id), "a deleted agent")


def shown_value(outputs: Sequence[Output]) -> str:
    """The bulk button's value: `id:revision` of each output shown."""
    return ",".join(f"{o.id}:{o.revision}" for o in outputs)


def read_shown(value: str) -> list[tuple[str, int]]:
    """`shown_value` read back; anything malformed is left out."""
    found: list[tuple[str, int]] = []
    for part in value.split(","):
        output_id, _, revision = part.partition(":")
        if output_id and revision.isdigit() and int(revision) >= 1:
            found.append((output_id, int(revision)))
    return found


def approve_shown_button(outputs: Sequence[Output], agents: Sequence[AgentView]) -> dict[str, Any]:
    """ "Approve the N shown", confirmed by a dialog that lists them."""
    lines = [
        f"• {skill_title(o.skill)} ({_agent_name(agents, o.agent_id)}, rev {o.revision})"
        for o in outputs
    ]
    listed: list[str] = []
    for index, line in enumerate(lines):
        if len("\n".join([*listed, line])) > CONFIRM_CHARS - 60:  # room for the rest
            listed.append(f"…and {len(lines) - index} more")
            break
        listed.append(line)
    return {
        "type": "button",
        "action_id": APPROVE_SHOWN,
        "style": "primary",
        "text": {"type": "plain_text", "text": f"Approve the {len(outputs)} shown"},
        "value": shown_value(outputs)[:BUTTON_VALUE_CHARS],
        "confirm": {
            "title": {"type": "plain_text", "text": f"Approve {len(outputs)} outputs?"},
            "text": {
                "type": "plain_text",
                "text": truncate(
                    "Each is decided on its own:\n" + "\n".join(listed), CONFIRM_CHARS
                ),
            },
            "confirm": {"type": "plain_text", "text": "Approve them"},
            "deny": {"type": "plain_text", "text": "Cancel"},
        },
    }


def queue_blocks(
    pending: Sequence[Output],
    total: int,
    *,
    filters: ReviewFilters,
    agents: Sequence[AgentView],
    skills: Sequence[str],
) -> Blocks:
    """The review queue: heading, filters, each output with its buttons (newest first),
    and the bulk button for those shown."""
    filtered = filters != ReviewFilters()
    blocks: Blocks = [
        _section(f"*Waiting for your approval* ({total})"),
        filter_block(filters, agents, skills),
    ]
    if not pending:
        empty = "Nothing matches these filters." if filtered else "Nothing is waiting for you."
        blocks.append(_context(empty))
        return blocks
    for output in pending:
        preview = truncate_escaped(from_markdown(output.preview.strip()), 280)
        quoted = "\n".join(f">{line}" for line in preview.splitlines()) or ">"
        note = ""
        if output.edits:
            note = f" · rev {output.revision}, edited by {mention(output.edits[-1].edited_by)}"
        blocks += [
            _section(
                f"{bold(skill_title(output.skill))} · proposed by "
                f"{bold(_agent_name(agents, output.agent_id))} for "
                f"{mention(output.requested_by)} · {date(output.created_at)}{note}\n{quoted}"
            ),
            decision_buttons(output),
        ]
    if total > len(pending):
        blocks.append(_context(f"…and {total - len(pending)} more; the newest are shown first."))
    blocks.append({"type": "actions", "elements": [approve_shown_button(pending, agents)]})
    return blocks


def bulk_result_text(
    applied: Sequence[Output], elsewhere: Sequence[tuple[str, str | None]], refused: list[str]
) -> str:
    """What "Approve the N shown" did: applied, decided by someone else first, refused."""
    lines = [f"✅ Approved {len(applied)} of {len(applied) + len(elsewhere) + len(refused)}."]
    if elsewhere:
        who = ", ".join(f"`{i}` ({mention(by)})" for i, by in elsewhere)
        lines.append(f"Someone else decided first: {who}.")
    if refused:
        lines.append("Not approved: " + "; ".join(escape(r) for r in refused))
    return "\n".join(lines)


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": truncate(text, 3_000)}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": truncate(text, 2_000)}]}
