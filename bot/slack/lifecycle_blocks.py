"""Block Kit for the approval lifecycle: an output's approvals so far (N of M), its
escalation, and the DMs that remind or call in approvers. Pure functions; the approval
message calls `approval_progress` in one place."""

from __future__ import annotations

from typing import Any

from bot.slack.text import escape
from core.approvals.grants import GrantView
from core.outputs.port import Output

Blocks = list[dict[str, Any]]
APPROVE_GRANT = "output_approve_grant"
REVOKE_GRANT = "grant_revoke"


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


def pending_lifecycle(output: Output, *, grantable: bool) -> Blocks:
    """Under a pending output: its progress, and for a grantable skill the third button."""
    found = approval_progress(output)
    if grantable:
        found.append(
            {
                "type": "actions",
                "block_id": f"grant:{output.id}:r{output.revision}",
                "elements": [
                    {
                        "type": "button",
                        "action_id": APPROVE_GRANT,
                        "text": {"type": "plain_text", "text": "Approve and allow for this thread"},
                        "value": output.id,
                        "confirm": {
                            "title": {"type": "plain_text", "text": "Allow for this thread?"},
                            "text": {
                                "type": "mrkdwn",
                                "text": f"Later `{escape(output.skill)}` proposals in this "
                                "thread with exactly these arguments will be approved under "
                                "your name until you revoke the grant.",
                            },
                            "confirm": {"type": "plain_text", "text": "Approve and allow"},
                            "deny": {"type": "plain_text", "text": "Cancel"},
                        },
                    }
                ],
            }
        )
    return found


def decided_lifecycle(output: Output, grant: GrantView | None) -> Blocks:
    """Under a decided output: the grant that approved it, or the grant it created (with
    Revoke while it is live)."""
    found: Blocks = []
    used = next((a for a in output.current_approvals() if a.grant_id), None)
    if used is not None:
        text = f"Auto-approved under {who(used.by)}'s grant (`{used.grant_id}`)"
        found.append({"type": "context", "elements": [{"type": "mrkdwn", "text": text}]})
    if grant is not None:
        if grant.revoked_at is None:
            text = f"Allowed for this thread under {who(grant.granted_by)}'s grant"
        else:
            text = f"Grant revoked by {who(grant.revoked_by or 'system')}"
        found.append({"type": "context", "elements": [{"type": "mrkdwn", "text": text}]})
        if grant.revoked_at is None:
            found.append(
                {
                    "type": "actions",
                    "elements": [
                        {
                            "type": "button",
                            "action_id": REVOKE_GRANT,
                            "text": {"type": "plain_text", "text": "Revoke grant"},
                            "value": grant.id,
                        }
                    ],
                }
            )
    return found


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
