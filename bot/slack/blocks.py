"""Block Kit, in one place: pure functions from domain objects to Slack JSON.

Nothing here does I/O. Listeners call these and send the result; snapshot tests pin the
JSON. Text that came from a model or a user is escaped (`text.escape`) before it is put
into mrkdwn.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.slack.edit_form import EDIT
from bot.slack.lifecycle_blocks import decided_lifecycle, pending_lifecycle
from bot.slack.mrkdwn import bold, date, from_markdown, mention, principal
from bot.slack.text import escape, split_message, truncate, truncate_escaped
from core.approvals.grants import GrantView
from core.approvals.service import MAX_REASON
from core.execution.effect import PlannedEffect
from core.knowledge.citations import Citation
from core.outputs.port import Output, OutputStatus
from core.schemas.views import AgentView

APPROVE = "output_approve"
REJECT = "output_reject"
REJECT_MODAL = "output_reject_reason"
REASON_BLOCK = "reason"
REASON_INPUT = "reason_input"
PREVIEW_CHARS = 1_200
SECTION_CHARS = 3_000  # Slack's limit for a section block's text
SOURCES_CHARS = 1_000  # of the 3,000 a context element takes: sources past it are counted
SOURCE_NAME_CHARS = 80
EFFECT_CHARS = 2_600  # of a section's 3,000: the code fence and heading take the rest
CHANGE_CHARS = 150  # each side of one field's old → new
CHANGES_SHOWN = 10
SECTION_MARK = "\u203a"  # a single right-pointing angle quote between document and section
Blocks = list[dict[str, Any]]
slack_date = date  # the name the other renderers know it by

_STATUS = {
    OutputStatus.PENDING: ("⏳", "Waiting for approval"),
    OutputStatus.APPROVED: ("✅", "Approved"),
    OutputStatus.EXECUTED: ("✅", "Approved and done"),
    OutputStatus.MANUAL: ("✅", "Approved — needs manual follow-up"),
    OutputStatus.EXECUTION_FAILED: ("⚠️", "Approved, but running it failed"),
    OutputStatus.REJECTED: ("❌", "Rejected"),
    OutputStatus.EXPIRED: ("⌛", "Expired"),
}


def skill_title(skill: str) -> str:
    return skill.replace("_", " ").replace("-", " ").capitalize()


def _arguments(arguments: dict[str, Any]) -> Blocks:
    fields = []
    for key, value in list(arguments.items())[:10]:
        shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        fields.append(
            {"type": "mrkdwn", "text": f"*{escape(key)}*\n{from_markdown(truncate(shown, 180))}"}
        )
    return [{"type": "section", "fields": fields}] if fields else []


def _preview(output: Output, content: str, content_url: str | None) -> Blocks:
    shown = truncate_escaped(from_markdown(content.strip()), PREVIEW_CHARS)
    blocks: Blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": _quote(shown)}}]
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


@dataclass(frozen=True)
class Policy:
    """Who may approve an agent's outputs, as its approval message states it."""

    approvers: tuple[str, ...] = ()
    allow_self_approval: bool = True
    require_distinct_editor_approver: bool = False
    accept_asserted_decisions: bool = True

    @classmethod
    def of(cls, agent: AgentView | None) -> Policy:
        if agent is None:
            return cls()
        return cls(
            tuple(agent.approvers),
            agent.allow_self_approval,
            agent.require_distinct_editor_approver,
            agent.accept_asserted_decisions,
        )


def policy_text(policy: Policy) -> str:
    """`Who may approve: @lead, @sales-leads · not the requester`."""
    who = (
        ", ".join(principal(p) for p in policy.approvers)
        if policy.approvers
        else "anyone in the workspace"
    )
    rules = []
    if not policy.allow_self_approval:
        rules.append("not the requester")
    if policy.require_distinct_editor_approver:
        rules.append("not its editors")
    if not policy.accept_asserted_decisions:
        rules.append("verified identities only")
    return " · ".join([f"Who may approve: {who}", *rules])


def skill_line(output: Output) -> str:
    """`*Send email* · `send_email` v3 · action, runs once approved`: what will run."""
    snapshot = output.skill_snapshot or {}
    name = f"`{escape(output.skill)}`"
    if snapshot.get("version") is not None:
        name += f" v{escape(str(snapshot['version']))}"
    kind = escape(str(snapshot.get("kind") or "action"))
    how = "runs once approved" if output.is_automatable else "manual follow-up once approved"
    return f"{bold(skill_title(output.skill))} · {name} · {kind}, {how}"


def fingerprint(output: Output) -> str:
    """`rev 2 · sha256 1a2b3c4d`: the revision and what the reviewer sees, in short."""
    return f"rev {output.revision} · sha256 {output.content_sha256[:8]}"


def approval_message(
    output: Output,
    *,
    agent_name: str,
    content: str,
    content_url: str | None,
    effect: PlannedEffect | None = None,
    policy: Policy | None = None,
    ping: bool = False,
    grantable: bool = False,
) -> tuple[str, Blocks]:
    """The interactive message reviewers act on, for the output's current revision: the
    skill that will run, what it says, its arguments, the request approving it makes
    (`effect`), the last edit's changes, revision and fingerprint, who asked and when, and
    who may approve. `ping` @-mentions the approvers (the approval channel's copy)."""
    policy = policy or Policy()
    title = skill_title(output.skill)
    text = f"Approval needed: {title} ({output.id})"
    if ping and policy.approvers:
        text = " ".join(principal(p) for p in policy.approvers) + f" {text}"
    blocks: Blocks = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": truncate(f"Approval needed: {title}", 150)},
        },
        _context(
            f"{skill_line(output)}\nProposed by {bold(agent_name)} for "
            f"{mention(output.requested_by)} · {slack_date(output.created_at)}"
        ),
        *_preview(output, content, content_url),
        *_arguments(output.arguments),
        *edit_blocks(output),
        *effect_blocks(effect),
        _context(f"{fingerprint(output)} · `{output.id}`"),
        _context(policy_text(policy)),
        decision_buttons(output),
        *pending_lifecycle(output, grantable=grantable),
    ]
    return text, blocks


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def decision_block_id(output: Output) -> str:
    """`decide:{id}:r{revision}`: a click names the revision its message showed. (Button
    values stay the bare output id, which integrations read.)"""
    return f"decide:{output.id}:r{output.revision}"


_REVISION = re.compile(r":r(?P<revision>[1-9][0-9]{0,8})$")


def clicked_revision(block_id: str | None) -> int:
    """The revision a click was made on; buttons posted before messages named their
    revision (no `:rN`) were posted for revision 1."""
    found = _REVISION.search(block_id or "")
    return int(found["revision"]) if found else 1


def decision_buttons(output: Output) -> dict[str, Any]:
    """Approve / Reject / Edit for one revision of an output: the same action ids, values
    and confirmation everywhere, so the approval listeners handle clicks from the App Home
    too. Edit is offered when the output keeps a snapshot of its skill (what edits need)."""
    title = skill_title(output.skill)
    elements: list[dict[str, Any]] = [
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
                        f"*{escape(title)}* (revision {output.revision}) will run right away."
                        if output.is_automatable
                        else f"*{escape(title)}* (revision {output.revision}) will be marked "
                        "for manual follow-up."
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
    ]
    if output.skill_snapshot is not None:
        elements.append(
            {
                "type": "button",
                "action_id": EDIT,
                "text": {"type": "plain_text", "text": "Edit"},
                "value": output.id,
            }
        )
    return {"type": "actions", "block_id": decision_block_id(output), "elements": elements}


def _change_value(change: dict[str, Any], key: str) -> str:
    if key not in change:
        return "_(none)_"
    value = change[key]
    shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    # Inline code holds one line: a multi-line value is shown on one.
    shown = truncate(" ".join(shown.replace("`", "'").split()), CHANGE_CHARS)
    return f"`{escape(shown)}`"


def edit_blocks(output: Output) -> Blocks:
    """Revision N, who edited it, and what changed (old → new per field), from the last
    edit; nothing for an unedited output."""
    if not output.edits:
        return []
    last = output.edits[-1]
    who = mention(last.edited_by)
    if last.identity == "asserted":
        who = f"{escape(last.edited_by)} via {escape(last.via)} (asserted)"
    lines = [f"✏️ *Revision {last.revision}* — edited by {who} · {slack_date(last.edited_at)}"]
    for change in last.changes[:CHANGES_SHOWN]:
        lines.append(
            f"• *{escape(truncate(str(change['field']), 80))}*: "
            f"{_change_value(change, 'old')} → {_change_value(change, 'new')}"
        )
    if len(last.changes) > CHANGES_SHOWN:
        lines.append(f"…and {len(last.changes) - CHANGES_SHOWN} more changed fields")
    if len(output.edits) > 1:
        lines.append(f"_{len(output.edits)} edits in all_")
    text = truncate_escaped("\n".join(lines), SECTION_CHARS)
    return [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]


def _code(text: str) -> str:
    # A fence inside the text would close ours early.
    fenced = truncate_escaped(escape(text).replace("```", "``\u200b`"), EFFECT_CHARS)
    return f"```{fenced}```"


def effect_text(effect: PlannedEffect) -> str:
    """The request as a reviewer reads it: `POST url`, headers (secrets as their
    "from NAME" placeholder, never a value), a blank line, the body as indented JSON."""
    if effect.kind == "mcp":
        head = f"tool {effect.tool}" + (f" on {effect.server}" if effect.server else "")
        body = json.dumps(effect.arguments or {}, ensure_ascii=False, indent=2)
        return f"{head}\n\n{body}"
    lines = [f"{effect.method or '?'} {effect.url or '(no URL)'}"]
    lines += [f"{name}: {value}" for name, value in (effect.headers or {}).items()]
    if effect.body is not None:
        body = (
            effect.body
            if isinstance(effect.body, str)
            else json.dumps(effect.body, ensure_ascii=False, indent=2)
        )
        lines += ["", body]
    return "\n".join(lines)


def effect_blocks(effect: PlannedEffect | None) -> Blocks:
    """The request approving will make, so the reviewer approves the real effect."""
    if effect is None:
        return []
    heading = (
        "*Approving calls this tool:*"
        if effect.kind == "mcp"
        else "*Approving sends this request:*"
    )
    text = f"{heading}\n{_code(effect_text(effect))}"
    if effect.problem:
        text += f"\n⚠️ {escape(truncate(effect.problem, 200))}"
    return [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]


def decided_message(
    output: Output,
    *,
    agent_name: str,
    content: str,
    content_url: str | None,
    grant: GrantView | None = None,
) -> tuple[str, Blocks]:
    """The same message after a decision: no buttons, the outcome in their place."""
    icon, label = _STATUS[output.status]
    title = skill_title(output.skill)
    lines = [f"{icon} *{label}*"]
    if output.status != OutputStatus.PENDING:
        lines[0] += f" by {mention(output.decided_by)} · {slack_date(output.decided_at)}"
    if output.decision_reason:
        lines.append(f"*Reason:* {from_markdown(truncate(output.decision_reason, 500))}")
    if output.status == OutputStatus.EXECUTED and output.execution_result:
        summary = str(output.execution_result.get("summary", ""))
        lines.append(f"*Result:* {from_markdown(truncate(summary, 500))}")
    if output.status == OutputStatus.EXECUTION_FAILED and output.execution_error:
        lines.append(f"*Error:* {from_markdown(truncate(output.execution_error, 500))}")
    blocks: Blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": truncate(title, 150)}},
        *_preview(output, content, content_url),
        *_arguments(output.arguments),
        {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}},
    ]
    line = decision_line(output)
    if line:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": line}]})
    blocks += decided_lifecycle(output, grant)
    blocks += [
        {
            "type": "context",
            "elements": [
                {"type": "mrkdwn", "text": f"Proposed by *{escape(agent_name)}* · `{output.id}`"}
            ],
        },
    ]
    return f"{label}: {title} ({output.id})", blocks


_DECIDED = {"approved": "Approved", "rejected": "Rejected", "expired": "Expired"}


def decision_line(output: Output) -> str | None:
    """`Approved by @x · rev 2 · sha256 1a2b3c4d`: who decided which revision, and the
    fingerprint of what they saw. An asserted identity says so: `Approved via webhook, as
    U123 (asserted) · …`. The one place this line is made (a receipt can join it here)."""
    if output.status == OutputStatus.PENDING:
        return None
    decision = output.decision or (
        "rejected"
        if output.status == OutputStatus.REJECTED
        else "expired"
        if output.status == OutputStatus.EXPIRED
        else "approved"
    )
    said = _DECIDED.get(decision, decision.capitalize())
    if decision == "expired":
        who = said
    elif output.decision_identity == "asserted":
        via = escape(output.decision_via or "api")
        who = f"{said} via {via}, as {escape(output.decided_by or 'unknown')} (asserted)"
    else:
        who = f"{said} by {mention(output.decided_by)}"
    revision = output.decision_revision or output.revision
    return " · ".join([who, f"rev {revision}", f"sha256 {output.content_sha256[:8]}"])


def outcome_text(output: Output) -> str:
    """The short thread reply announcing what happened."""
    icon, label = _STATUS[output.status]
    title = skill_title(output.skill)
    who = mention(output.decided_by)
    if output.status == OutputStatus.REJECTED:
        reason = from_markdown(truncate(output.decision_reason or "", 300))
        return f"{icon} {who} rejected *{title}*: {reason}\nI'll take that into account."
    if output.status == OutputStatus.EXECUTED:
        summary = str((output.execution_result or {}).get("summary", "done"))
        return f"{icon} {who} approved *{title}* — done: {from_markdown(truncate(summary, 300))}"
    if output.status == OutputStatus.MANUAL:
        return f"{icon} {who} approved *{title}* — it's ready for someone to carry out."
    if output.status == OutputStatus.EXECUTION_FAILED:
        error = from_markdown(truncate(output.execution_error or "unknown error", 300))
        return f"{icon} {who} approved *{title}*, but running it failed: {error}"
    if output.status == OutputStatus.EXPIRED:
        return f"{icon} *{title}* expired before anyone decided."
    return f"{icon} {label}: *{title}*"


def ephemeral_stale(current_revision: int, permalink: str | None) -> str:
    """A decision clicked on a message older than the output's current revision."""
    where = f" <{permalink}|review the latest>" if permalink else " review the latest"
    return (
        "⚠️ This output was edited since this message was posted —"
        f"{where} (revision {current_revision}) and decide there. Nothing was decided."
    )


def notice_modal(title: str, text: str) -> dict[str, Any]:
    """A modal that only says something (a submission that cannot show a field error)."""
    return {
        "type": "modal",
        "title": {"type": "plain_text", "text": truncate(title, 24)},
        "close": {"type": "plain_text", "text": "Close"},
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": from_markdown(text)}}],
    }


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
                    "max_length": MAX_REASON,
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


def ephemeral_not_an_approver(agent_name: str, approvers: Sequence[str]) -> str:
    """A click by someone the agent's policy does not let decide: who may, mentioned."""
    who = ", ".join(principal(p) for p in approvers)
    return f"⚠️ Only {bold(agent_name)}'s approvers may decide its outputs: {who}."


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
