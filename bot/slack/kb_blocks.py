"""Block Kit for knowledge bases in Slack: `/agent kb list|show`, the prompt under a dropped
file, and the lines that message shows while the file is ingested. Pure: no I/O."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from bot.slack.blocks import Blocks
from bot.slack.text import escape, truncate
from core.knowledge.schemas import DocumentView, KnowledgeBaseView

PICK = "kb_drop_pick"
"""The knowledge base select under a dropped file (its own clicks are only acked)."""
ADD = "kb_drop_add"
"""The "Add" button under a dropped file; `value` names the file and who shared it."""
REMOVE = "kb_document_remove"
"""A document's Remove button in `/agent kb show`; `value` names the knowledge base and it."""
DROP_BLOCK = "kb_drop"
MAX_OPTIONS = 100  # Slack's limit for a static select
MAX_DOCUMENTS = 40  # a message holds 50 blocks
STATUS_ICONS = {"ready": "✅", "queued": "⏳", "ingesting": "⏳", "failed": "⚠️"}


def _section(text: str, accessory: dict[str, Any] | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "section", "text": {"type": "mrkdwn", "text": text}}
    if accessory is not None:
        block["accessory"] = accessory
    return block


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def _plain(text: str, limit: int = 75) -> dict[str, Any]:
    return {"type": "plain_text", "text": truncate(text, limit), "emoji": True}


def kb_list(bases: Sequence[KnowledgeBaseView], *, can_configure: bool) -> tuple[str, Blocks]:
    if not bases:
        text = "There are no knowledge bases yet."
        if can_configure:
            text += " Create one with `/agent kb new NAME [description]`."
        return text, [_section(text)]
    lines = []
    for kb in bases:
        about = f" — {escape(truncate(kb.description, 120))}" if kb.description else ""
        lines.append(
            f"• *{escape(kb.name)}*{about}\n   {kb.document_count} document(s), "
            f"{kb.chunk_count} chunks"
        )
    hint = "See one with `/agent kb show NAME`."
    if can_configure:
        hint += " Add a document by sharing the file with me in a DM."
    text = f"*Knowledge bases* ({len(bases)})"
    return text, [_section(text), _section("\n".join(lines)), _context(hint)]


def document_line(doc: DocumentView) -> str:
    icon = STATUS_ICONS.get(doc.status, "•")
    pages = f", {doc.pages} pages" if doc.pages else ""
    line = f"{icon} *{escape(doc.name)}* — {doc.status}, {doc.chunk_count} chunks{pages}"
    if doc.status == "failed" and doc.error:
        line += f"\n   {escape(truncate(doc.error, 200))}"
    return line


def remove_value(kb: KnowledgeBaseView, doc: DocumentView) -> str:
    return json.dumps({"k": kb.id, "d": doc.id}, separators=(",", ":"))


def kb_details(
    kb: KnowledgeBaseView,
    documents: Sequence[DocumentView],
    *,
    can_configure: bool,
    more: bool = False,
    notice: str | None = None,
) -> tuple[str, Blocks]:
    """A knowledge base and its documents; admins get a Remove button (with a confirm
    dialog) per document."""
    title = f"*{escape(kb.name)}*"
    if kb.description:
        title += f" — {escape(truncate(kb.description, 200))}"
    blocks: Blocks = []
    if notice:
        blocks.append(_section(notice))
    blocks += [
        _section(title),
        _context(
            f"{kb.document_count} document(s), {kb.chunk_count} chunks · embedder "
            f"`{escape(kb.embedding_model)}` · top {kb.top_k} passages per question"
        ),
    ]
    if not documents:
        hint = "No documents yet."
        if can_configure:
            hint += " Share a PDF, Markdown, text, HTML or CSV file with me in a DM to add one."
        blocks.append(_section(hint))
    for doc in documents[:MAX_DOCUMENTS]:
        button = None
        if can_configure:
            button = {
                "type": "button",
                "action_id": REMOVE,
                "text": _plain("Remove"),
                "style": "danger",
                "value": remove_value(kb, doc),
                "confirm": {
                    "title": _plain("Remove this document?"),
                    "text": {
                        "type": "mrkdwn",
                        "text": f"*{escape(truncate(doc.name, 200))}* and its "
                        f"{doc.chunk_count} chunks leave *{escape(kb.name)}*; agents stop "
                        "finding it at once.",
                    },
                    "confirm": _plain("Remove"),
                    "deny": _plain("Keep it"),
                    "style": "danger",
                },
            }
        blocks.append(_section(document_line(doc), button))
    if more or len(documents) > MAX_DOCUMENTS:
        blocks.append(
            _context(
                f"Showing the first {min(len(documents), MAX_DOCUMENTS)} documents; "
                f"`cosmo kb docs {escape(kb.name)}` lists them all."
            )
        )
    return f"Knowledge base {kb.name}", blocks


# -- a dropped file -------------------------------------------------------------------------


def add_value(file_id: str, sharer: str) -> str:
    return json.dumps({"f": file_id, "u": sharer}, separators=(",", ":"))


def drop_prompt(
    *,
    file_id: str,
    name: str,
    kind: str,
    size: str,
    sharer: str,
    bases: Sequence[KnowledgeBaseView],
) -> tuple[str, Blocks]:
    """Under a file an admin shared: which knowledge base should it go into?"""
    head = f"📄 *{escape(name)}* · {escape(kind)} · {size}"
    if not bases:
        text = (
            f"{head}\nThere is no knowledge base to add it to yet. Create one with "
            "`/agent kb new NAME`, then share the file again."
        )
        return text, [_section(text)]
    options = [
        {"text": _plain(kb.name), "value": kb.id, "description": _plain(kb.description)}
        if kb.description
        else {"text": _plain(kb.name), "value": kb.id}
        for kb in bases[:MAX_OPTIONS]
    ]
    select: dict[str, Any] = {
        "type": "static_select",
        "action_id": PICK,
        "placeholder": _plain("Choose a knowledge base"),
        "options": options,
    }
    if len(options) == 1:
        select["initial_option"] = options[0]
    text = f"{head}\nAdd it to a knowledge base?"
    return text, [
        _section(text),
        {
            "type": "actions",
            "block_id": f"{DROP_BLOCK}:{file_id}",
            "elements": [
                select,
                {
                    "type": "button",
                    "action_id": ADD,
                    "text": _plain("Add"),
                    "style": "primary",
                    "value": add_value(file_id, sharer),
                },
            ],
        },
        _context(
            f"Only <@{sharer}> or another agent admin can choose. A file with the same name "
            "replaces that document."
        ),
    ]


def drop_status(text: str) -> tuple[str, Blocks]:
    """What the prompt turns into once someone chose: one line that says where it stands."""
    return text, [_section(text)]


def progress_line(name: str, kb: str, done: int, total: int) -> str:
    return f"⏳ Adding *{escape(name)}* to *{escape(kb)}*: {done}/{total} chunks…"


def ready_line(name: str, kb: str, chunks: int, *, unchanged: bool = False) -> str:
    if unchanged:
        return (
            f"✅ *{escape(name)}* is already in *{escape(kb)}* with the same content: "
            f"{chunks} chunks."
        )
    return (
        f"✅ *{escape(name)}* is ready in *{escape(kb)}*: {chunks} chunks. "
        f"(`/agent kb show {escape(kb)}` lists its documents.)"
    )


def failed_line(name: str, kb: str | None, reason: str) -> str:
    where = f" to *{escape(kb)}*" if kb else ""
    return f"⚠️ I couldn't add *{escape(name)}*{where}: {reason}"
