"""Block Kit for the approval lifecycle: an output's approvals so far (N of M), its
escalation, and the DMs that remind or call in approvers. Pure functions; the approval
message calls `approval_progress` in one place."""

from __future__ import annotations

from typing import Any

from bot.slack.text import escape
from core.outputs.port import Output

Blocks = list[dict[str, Any]]


def who(principal: str) -> str:
    """A user or user-group id as Slack shows it."""
    if principal.startswith("S"):
        return f"<!subteam^{principal}>"
    if principal in ("system", "api"):
        return "Cosmo" if principal == "system" else "an admin (API)"
    return f"<@{principal}>"


def approval_progress(output: Output) -> Blocks:
    """ "1 of 2 approvals: <@a>" for outputs that need several, and who it was escalated
    to; nothing for a plain one-approval output."""
    lines: list[str] = []
    needed = output.required_approvals
    if needed > 1:
        approvers = [who(a.by) for a in output.current_approvals()]
        line = f"*{output.approval_count} of {needed} approvals*"
        lines.append(line + (": " + ", ".join(approvers) if approvers else ""))
    if output.escalated_at is not None:
        targets = (output.approval_policy or {}).get("escalate_to") or []
        lines.append("Escalated to " + ", ".join(who(t) for t in targets))
    if not lines:
        return []
    return [{"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(lines)}]}]


def _link(permalink: str | None) -> str:
    return f"<{escape(permalink)}|the approval message>" if permalink else "the approval message"


def reminder_text(output: Output, agent_name: str, permalink: str | None) -> str:
    return (
        f"Reminder: *{escape(agent_name)}*'s proposed `{escape(output.skill)}` "
        f"(`{output.id}`) still awaits your decision — see {_link(permalink)}."
    )


def escalation_text(output: Output, agent_name: str, permalink: str | None) -> str:
    return (
        f"Escalated to you: *{escape(agent_name)}*'s proposed `{escape(output.skill)}` "
        f"(`{output.id}`) was not decided in time, and you may now decide it — see "
        f"{_link(permalink)}."
    )
