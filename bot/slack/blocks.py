"""Block Kit, in one place: pure functions from domain objects to Slack JSON.

Nothing here does I/O. Listeners call these and send the result; snapshot tests pin the
JSON. Text that came from a model or a user is escaped (`text.escape`) before it is put
into mrkdwn.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bot.slack.text import escape, split_message, truncate
from core.knowledge.citations import Citation
from core.outputs.port import Output, OutputStatus

APPROVE = "output_approve"
REJECT = "output_reject"
REJECT_MODAL = "output_reject_reason"
REASON_BLOCK = "reason"
REASON_INPUT = "reason_input"
PREVIEW_CHARS = 1_200
SECTION_CHARS = 3_000  # Slack's limit for a section block's text
SOURCES_CHARS = 1_000  # of the 3,000 a context element takes: sources past it are counted
SOURCE_NAME_CHARS = 80
SECTION_MARK = "\u203a"  # a single right-pointing angle quote between document and section
Blocks = list[dict[str, Any]]

_STATUS = {
    OutputStatus.PENDING: ("⏳", "Waiting for approval"),
    OutputStatus.APPROVED: ("✅", "Approved"),
    OutputStatus.EXECUTED: ("✅", "Approved and done"),
    OutputStatus.MANUAL: ("✅", "Approved — needs manual follow-up"),
    OutputStatus.EXECUTION_FAILED: ("⚠️", "Approved, but running it failed"),
    OutputStatus.REJECTED: ("❌", "Rejected"),
    OutputStatus.EXPIRED: ("⌛", "Expired"),
}


def slack_date(when: datetime | None) -> str:
    if when is None:
        return "just now"
    unix = int(when.timestamp())
    return f"<!date^{unix}^{{date_short_pretty}} at {{time}}|{when:%Y-%m-%d %H:%M} UTC>"


def mention(user_id: str | None) -> str:
    if not user_id:
        return "someone"
    if user_id in ("system", "api"):
        return {"system": "Cosmo", "api": "an admin (API)"}[user_id]
    return f"<@{user_id}>"


def skill_title(skill: str) -> str:
    return skill.replace("_", " ").replace("-", " ").capitalize()


def _arguments(arguments: dict[str, Any]) -> Blocks:
    fields = []
    for key, value in list(arguments.items())[:10]:
        shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        fields.append(
            {"type": "mrkdwn", "text": f"*{escape(key)}*\n{escape(truncate(shown, 180))}"}
        )
    return [{"type": "section", "fields": fields}] if fields else []


def _preview(output: Output, content: str, content_url: str | None) -> Blocks:
    shown = truncate(content.strip(), PREVIEW_CHARS)
    blocks: Blocks = [
        {"type": "section", "text": {"type": "mrkdwn", "text": _quote(escape(shown))}}
    ]
    if len(content.strip()) > PREVIEW_CHARS and content_url:
        blocks.append(
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"Preview truncated — <{content_url}|open the full content>",
                    }
                ],
            }
        )
    return blocks


def _quote(text: str) -> str:
    return "\n".join(f">{line}" for line in text.splitlines()) or ">"


def approval_message(
    output: Output, *, agent_name: str, content: str, content_url: str | None
) -> tuple[str, Blocks]:
    """The interactive message reviewers act on."""
    title = skill_title(output.skill)
    blocks: Blocks = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": truncate(f"Approval needed: {title}", 150)},
        },
        *_preview(output, content, content_url),
        *_arguments(output.arguments),
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": f"Proposed by *{escape(agent_name)}* for "
                    f"{mention(output.requested_by)} · `{output.id}`"
                    + (
                        " · runs automatically once approved"
                        if output.is_automatable
                        else " · approval marks it for manual follow-up"
                    ),
                }
            ],
        },
        decision_buttons(output),
    ]
    return f"Approval needed: {title} ({output.id})", blocks


def decision_buttons(output: Output) -> dict[str, Any]:
    """Approve / Reject for one output: the same action ids, values and confirmation as the
    approval message, so the approval listeners handle clicks from the App Home too."""
    title = skill_title(output.skill)
    return {
        "type": "actions",
        "block_id": f"decide:{output.id}",
        "elements": [
            {
                "type": "button",
                "action_id": APPROVE,
                "style": "primary",
                "text": {"type": "plain_text", "text": "Approve"},
                "value": output.id,
                "confirm": {
                    "title": {"type": "plain_text", "text": "Approve this?"},
                    "text": {
                        "type": "mrkdwn",
                        "text": (
                            f"*{escape(title)}* will run right away."
                            if output.is_automatable
                            else f"*{escape(title)}* will be marked for manual follow-up."
                        ),
                    },
                    "confirm": {"type": "plain_text", "text": "Approve"},
                    "deny": {"type": "plain_text", "text": "Cancel"},
                },
            },
            {
                "type": "button",
                "action_id": REJECT,
                "style": "danger",
                "text": {"type": "plain_text", "text": "Reject"},
                "value": output.id,
            },
        ],
    }


def decided_message(
    output: Output, *, agent_name: str, content: str, content_url: str | None
) -> tuple[str, Blocks]:
    """The same message after a decision: no buttons, the outcome in their place."""
    icon, label = _STATUS[output.status]
    title = skill_title(output.skill)
    lines = [f"{icon} *{label}*"]
    if output.status != OutputStatus.PENDING:
        lines[0] += f" by {mention(output.decided_by)} · {slack_date(output.decided_at)}"
    if output.decision_reason:
        lines.append(f"*Reason:* {escape(truncate(output.decision_reason, 500))}")
    if output.status == OutputStatus.EXECUTED and output.execution_result:
        summary = str(output.execution_result.get("summary", ""))
        lines.append(f"*Result:* {escape(truncate(summary, 500))}")
    if output.status == OutputStatus.EXECUTION_FAILED and output.execution_error:
        lines.append(f"*Error:* {escape(truncate(output.execution_error, 500))}")
    blocks: Blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": truncate(title, 150)}},
        *_preview(output, content, content_url),
        *_arguments(output.arguments),
        {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}},
        {
            "type": "context",
            "elements": [
                {"type": "mrkdwn", "text": f"Proposed by *{escape(agent_name)}* · `{output.id}`"}
            ],
        },
    ]
    return f"{label}: {title} ({output.id})", blocks


def outcome_text(output: Output) -> str:
    """The short thread reply announcing what happened."""
    icon, label = _STATUS[output.status]
    title = skill_title(output.skill)
    who = mention(output.decided_by)
    if output.status == OutputStatus.REJECTED:
        reason = escape(truncate(output.decision_reason or "", 300))
        return f"{icon} {who} rejected *{title}*: {reason}\nI'll take that into account."
    if output.status == OutputStatus.EXECUTED:
        summary = str((output.execution_result or {}).get("summary", "done"))
        return f"{icon} {who} approved *{title}* — done: {escape(truncate(summary, 300))}"
    if output.status == OutputStatus.MANUAL:
        return f"{icon} {who} approved *{title}* — it's ready for someone to carry out."
    if output.status == OutputStatus.EXECUTION_FAILED:
        error = escape(truncate(output.execution_error or "unknown error", 300))
        return f"{icon} {who} approved *{title}*, but running it failed: {error}"
    if output.status == OutputStatus.EXPIRED:
        return f"{icon} *{title}* expired before anyone decided."
    return f"{icon} {label}: *{title}*"


def reject_modal(output_id: str, metadata: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": REJECT_MODAL,
        "private_metadata": json.dumps({"output_id": output_id, **metadata}),
        "title": {"type": "plain_text", "text": "Reject output"},
        "submit": {"type": "plain_text", "text": "Reject"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {
                "type": "input",
                "block_id": REASON_BLOCK,
                "label": {
                    "type": "plain_text",
                    "text": "Why? The agent will see this and can revise.",
                },
                "element": {
                    "type": "plain_text_input",
                    "action_id": REASON_INPUT,
                    "multiline": True,
                    "max_length": 2000,
                    "placeholder": {
                        "type": "plain_text",
                        "text": "e.g. Use the enterprise price list",
                    },
                },
            }
        ],
    }


def ephemeral_already_decided(
    status: str, decided_by: str | None, decided_at: datetime | None
) -> str:
    label = _STATUS.get(OutputStatus(status), ("", status))[1].lower()
    return (
        f"Too late: this was already {label} by {mention(decided_by)} · {slack_date(decided_at)}."
    )


def thinking() -> str:
    return "_Thinking…_"


def reply_with_sources(text: str, citations: Sequence[Citation]) -> Blocks:
    """A reply message with the knowledge it cites under it.

    `text` is the message's escaped mrkdwn (as posted in `text`); with blocks, Slack shows
    the blocks instead, so the text goes into sections (a section takes 3,000 characters).
    """
    sections: Blocks = [
        {"type": "section", "text": {"type": "mrkdwn", "text": part}}
        for part in split_message(text, SECTION_CHARS)
        if part
    ]
    return [*sections, sources_context(citations)]


def sources_context(citations: Sequence[Citation]) -> dict[str, Any]:
    """`Sources: [1] refunds.md (p. 3) · [2] pricing.pdf`, as one context line (see
    `source_label`); past `SOURCES_CHARS` the rest are counted (`and 4 more`)."""
    shown: list[str] = []
    length = 0
    for index, citation in enumerate(citations):
        item = source_label(citation)
        if shown and length + len(item) > SOURCES_CHARS:
            shown.append(f"and {len(citations) - index} more")
            break
        shown.append(item)
        length += len(item) + 3
    return {
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": "Sources: " + " · ".join(shown)}],
    }


def source_label(citation: Citation) -> str:
    """`[1] refunds.md > EU (p. 3)` with a single angle quote for `>`, escaped: document and
    section names are user content."""
    where = truncate(citation.document, SOURCE_NAME_CHARS)
    if citation.section:
        where += f" {SECTION_MARK} {truncate(citation.section, SOURCE_NAME_CHARS)}"
    if citation.page is not None:
        where += f" (p. {citation.page})"
    return f"[{citation.number}] {escape(where)}"
