"""One mrkdwn renderer: Markdown written by models and skills reaches Slack as mrkdwn, and
no block we build carries Markdown-only syntax (`**bold**`, `[label](url)`, `## heading`),
which Slack shows literally."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from bot.slack import admin_blocks as ui
from bot.slack import agent_versions, blocks, edit_form, mrkdwn, output_lookup
from core.approvals.audit import AuditEntry
from core.execution.effect import PlannedEffect
from core.knowledge.citations import Citation
from core.memory.port import MemoryRecord
from core.outputs.port import OutputEdit, OutputStatus
from core.schemas.views import AgentVersionView
from core.skills.builtins import render_email
from tests.unit.test_admin_blocks import WHEN, agent, home, output, persona, skill

#: Markdown a model or a skill writes: every builder below gets it where such text goes.
MARKDOWN = (
    "## Plan\n**To:** ana@example.com\n- first **step** & <more>\n"
    "See [the docs](https://example.com/docs) and `**code stays**`.\n"
    "```\n## fenced stays\n```"
)
EMAIL, _ = render_email({"to": "ana@example.com", "subject": "Renewal", "body": MARKDOWN})

_CODE = re.compile(r"```.*?```|`[^`\n]*`", re.DOTALL)
_MARKDOWN_ONLY = {
    "bold as **x**": re.compile(r"\*\*"),
    "a [label](url) link": re.compile(r"\[[^\]\n]+\]\([^)\s]+\)"),
    "a # heading": re.compile(r"^\s{0,3}#{1,6}\s", re.MULTILINE),
}


def mrkdwn_texts(node: Any) -> Iterator[str]:
    """Every mrkdwn text object in a block list, view or message."""
    if isinstance(node, dict):
        if node.get("type") == "mrkdwn" and isinstance(node.get("text"), str):
            yield node["text"]
        for value in node.values():
            yield from mrkdwn_texts(value)
    elif isinstance(node, list | tuple):
        for item in node:
            yield from mrkdwn_texts(item)


def markdown_only(text: str) -> list[str]:
    prose = _CODE.sub("", text)
    return [name for name, pattern in _MARKDOWN_ONLY.items() if pattern.search(prose)]


def edited() -> Any:
    change = {"field": "body", "old": "**old**", "new": MARKDOWN}
    edit = OutputEdit(
        revision=2,
        edited_by="U0LEAD0001",
        identity="verified",
        via="slack",
        edited_at=WHEN,
        changes=[change],
    )
    return output(revision=2, edits=[edit], preview=EMAIL, arguments={"body": MARKDOWN})


def decided(status: OutputStatus) -> Any:
    return output(
        status=status,
        decided_by="U0LEAD0001",
        decided_at=WHEN,
        decision_reason=MARKDOWN,
        execution_result={"summary": MARKDOWN},
        execution_error=MARKDOWN,
    )


def every_builder() -> Iterator[tuple[str, Any]]:
    """(name, what it built) for each Block Kit builder, fed Markdown where text from
    models, skills or people goes."""
    effect = PlannedEffect(kind="http", method="POST", url="https://crm.example.com", body=MARKDOWN)
    yield (
        "approval message",
        blocks.approval_message(
            edited(),
            agent_name="sales-bot",
            content=EMAIL,
            content_url="https://files.example.com/o",
            effect=effect,
            policy=blocks.Policy.of(agent()),
            ping=True,
        ),
    )
    for status in OutputStatus:
        if status != OutputStatus.PENDING:
            o = decided(status)
            yield (
                f"decided message ({status})",
                blocks.decided_message(o, agent_name="bot", content=EMAIL, content_url=None),
            )
            yield f"outcome ({status})", [{"type": "mrkdwn", "text": blocks.outcome_text(o)}]
    citation = Citation(number=1, document="refunds.md", section="EU", page=2)
    yield (
        "reply with sources",
        blocks.reply_with_sources(mrkdwn.from_markdown(MARKDOWN), [citation]),
    )
    yield "home", ui.home_view(home(pending=[output(preview=EMAIL)]))
    yield "help", ui.help_message(can_configure=True)
    yield "agent list", ui.agent_list([agent()], answering_id=None, why="ambiguous")
    yield (
        "agent details",
        ui.agent_details(agent(), persona=persona(), skills=[skill("draft_email")], model="m"),
    )
    memory = MemoryRecord("m1", MARKDOWN, "U0ALICE001", "agt_01", None, WHEN)
    yield "memory list", ui.memory_list(agent(), [memory])
    form = edit_form.edit_fields(
        {"type": "object", "properties": {"body": {"type": "string"}}}, {"body": MARKDOWN}
    )
    yield (
        "edit form",
        edit_form.edit_modal(
            skill_title="Draft email", revision=1, form=form, metadata={"output_id": "out_01"}
        ),
    )
    yield "notice", blocks.notice_modal("Not saved", MARKDOWN)
    version = AgentVersionView(
        id="agv_1",
        agent_id="agt_01",
        version=1,
        change=MARKDOWN,
        created_by="slack:U0ADA00001",
        created_at=WHEN,
        snapshot={},
    )
    yield "history", agent_versions.history_message(agent(version=2), [version], more=True)
    yield (
        "outputs",
        output_lookup.outputs_message(
            "outputs", [output(preview=MARKDOWN)], {}, {}, everything=False
        ),
    )
    entry = AuditEntry(
        id="aud_1",
        tenant_id="default",
        seq=1,
        output_id="out_01",
        actor="U0LEAD0001",
        identity="asserted",
        via="webhook",
        key_id=None,
        key_name=None,
        action="approve",
        outcome="ok",
        revision=1,
        content_sha256=None,
        detail=MARKDOWN,
        created_at=WHEN,
        prev_hash="0",
        entry_hash="1",
    )
    yield "audit", output_lookup.audit_message(output(), [entry])


@pytest.mark.parametrize(("name", "built"), list(every_builder()), ids=lambda v: str(v)[:30])
def test_no_block_we_build_carries_markdown_only_syntax(name: str, built: Any) -> None:
    texts = list(mrkdwn_texts(built))
    assert texts, f"{name}: no mrkdwn found, so this check would prove nothing"
    found = {text: markdown_only(text) for text in texts if markdown_only(text)}
    assert not found, f"{name}: Markdown-only syntax in mrkdwn: {found}"


def test_the_scan_catches_markdown_it_is_meant_to_catch() -> None:
    assert markdown_only("**To:** ana") == ["bold as **x**"]
    assert markdown_only("[docs](https://x.y)") == ["a [label](url) link"]
    assert markdown_only("## Plan") == ["a # heading"]
    assert markdown_only("`**x**` and ```\n## y\n```") == []


def test_the_drafted_emails_headers_are_bold_in_the_approval_message() -> None:
    """Seen: `**To:**` showed its asterisks in the most important message we post."""
    _, message = blocks.approval_message(
        output(), agent_name="sales-bot", content=EMAIL, content_url=None
    )
    preview = next(b for b in message if b["type"] == "section" and "text" in b)
    assert preview["text"]["text"].startswith(">*To:* ana@example.com\n>*Subject:* Renewal")


def test_markdown_becomes_escaped_mrkdwn_and_code_is_left_alone() -> None:
    assert mrkdwn.from_markdown(MARKDOWN) == (
        "*Plan*\n*To:* ana@example.com\n• first *step* &amp; &lt;more&gt;\n"
        "See the docs (https://example.com/docs) and `**code stays**`.\n"
        "```\n## fenced stays\n```"
    )


def test_model_text_cannot_forge_a_link_or_a_mention() -> None:
    shown = mrkdwn.from_markdown("[your bank](https://evil.example) <@U0BOSS> <!channel>")
    assert "<" not in shown and ">" not in shown
    assert "your bank (https://evil.example)" in shown


def test_mentions_links_and_bold() -> None:
    assert mrkdwn.mention("U0LEAD0001") == "<@U0LEAD0001>"
    assert mrkdwn.mention("ana@example.com") == "ana@example.com"
    assert mrkdwn.mention("<!channel>") == "&lt;!channel&gt;"
    assert mrkdwn.principal("S0LEADS001") == "<!subteam^S0LEADS001>"
    assert mrkdwn.link("https://x.y/a", "A | B") == "<https://x.y/a|A \u2223 B>"
    assert mrkdwn.link("javascript:alert(1)", "x") == "x (javascript:alert(1))"
    assert mrkdwn.bold("a & b") == "*a &amp; b*"
