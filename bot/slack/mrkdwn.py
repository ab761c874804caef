"""Slack mrkdwn, written in one place.

Slack's mrkdwn is not Markdown: bold is `*x*` (Markdown's `**x**` shows its asterisks),
links are `<url|label>`, mentions `<@U123>`, and there are no `#` headings. Every block we
build takes its mrkdwn from these functions; `from_markdown` turns text written in Markdown
(a model's reply, a skill's rendered content such as a drafted email) into mrkdwn.

Text that did not come from us is escaped (`&`, `<`, `>`), so it cannot ping `@channel`,
mention people or forge links; for the same reason a Markdown link in such text becomes
`label (url)`, never a Slack link with a label that hides where it goes.
"""

from __future__ import annotations

import re
from datetime import datetime

from bot.slack.text import escape, truncate_escaped

__all__ = ["bold", "date", "escape", "from_markdown", "link", "mention", "principal"]

_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,20}$")
_GROUP_ID = re.compile(r"^S[A-Z0-9]{2,20}$")
_NAMED = {"system": "Cosmo", "api": "an admin (API)"}


def bold(text: str) -> str:
    """`*text*`, escaped. Slack shows nothing bold for an empty `**`, so empty stays empty."""
    shown = escape(text).replace("*", "\u2217")
    return f"*{shown}*" if shown.strip() else shown


def mention(user_id: str | None) -> str:
    """`<@U123>` for a Slack user; our own actors by name; anything else escaped as is."""
    if not user_id:
        return "someone"
    if user_id in _NAMED:
        return _NAMED[user_id]
    user_id = user_id.removeprefix("slack:")  # how configuration changes name their author
    if _USER_ID.match(user_id):
        return f"<@{user_id}>"
    return escape(user_id)


def principal(principal_id: str) -> str:
    """An approver entry: a user mention, or a user group mention (`<!subteam^S123>`)."""
    if _GROUP_ID.match(principal_id):
        return f"<!subteam^{principal_id}>"
    return mention(principal_id)


def link(url: str, label: str | None = None) -> str:
    """`<url|label>`; a URL with characters that would end the link early is shown as text."""
    if any(ch in url for ch in "<>| \n") or not url.startswith(("https://", "http://")):
        return escape(f"{label} ({url})" if label else url)
    if not label:
        return f"<{url}>"
    shown = escape(label).replace("|", "\u2223")
    return f"<{url}|{shown}>"


def date(when: datetime | None) -> str:
    """Slack's date formatting (`<!date^…>`): each reader sees it in their own time zone;
    the fallback after `|` is UTC."""
    if when is None:
        return "just now"
    unix = int(when.timestamp())
    return f"<!date^{unix}^{{date_short_pretty}} at {{time}}|{when:%Y-%m-%d %H:%M} UTC>"


# -- Markdown to mrkdwn -------------------------------------------------------------------

_FENCE = re.compile(r"```.*?(?:```|$)", re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]+`")
_HEADING = re.compile(r"^[ \t]{0,3}#{1,6}[ \t]+(?P<text>.+?)[ \t]*#*[ \t]*$", re.MULTILINE)
_BOLD = re.compile(r"(\*\*|__)(?=\S)(?P<text>.+?)(?<=\S)\1")
_STRIKE = re.compile(r"~~(?=\S)(?P<text>.+?)(?<=\S)~~")
_LINK = re.compile(r"(?<!!)\[(?P<label>[^\]\n]+)\]\((?P<url>[^)\s]+)\)")
_IMAGE = re.compile(r"!\[(?P<label>[^\]\n]*)\]\((?P<url>[^)\s]+)\)")
_BULLET = re.compile(r"^(?P<indent>[ \t]*)[*+-][ \t]+", re.MULTILINE)


def _prose(text: str) -> str:
    """Markdown prose (no code in it) to mrkdwn: escaped, then restyled."""
    text = escape(text)
    text = _HEADING.sub(lambda m: f"*{m['text'].strip('*')}*", text)
    text = _BULLET.sub(lambda m: f"{m['indent']}• ", text)
    text = _BOLD.sub(lambda m: f"*{m['text']}*", text)
    text = _STRIKE.sub(lambda m: f"~{m['text']}~", text)
    text = _IMAGE.sub(lambda m: f"{m['label'] or 'image'} ({m['url']})", text)
    return _LINK.sub(
        lambda m: m["url"] if m["label"] == m["url"] else f"{m['label']} ({m['url']})", text
    )


def _outside_inline_code(text: str) -> str:
    parts: list[str] = []
    last = 0
    for code in _INLINE_CODE.finditer(text):
        parts += [_prose(text[last : code.start()]), escape(code.group())]
        last = code.end()
    parts.append(_prose(text[last:]))
    return "".join(parts)


def from_markdown(text: str) -> str:
    """Markdown (as models and our skills write it) as escaped mrkdwn: `**b**` → `*b*`,
    `# Title` → `*Title*`, `- item` → `• item`, `[label](url)` → `label (url)`; code spans
    and fences are kept as they are (escaped)."""
    parts: list[str] = []
    last = 0
    for fence in _FENCE.finditer(text):
        parts += [_outside_inline_code(text[last : fence.start()]), escape(fence.group())]
        last = fence.end()
    parts.append(_outside_inline_code(text[last:]))
    return "".join(parts)


def one_line(text: str, limit: int) -> str:
    """Markdown as escaped mrkdwn on one line, for lists: a code fence cut by truncation
    would turn the rest of the message into code, so fences go and lines are joined; a code
    span cut in half goes whole."""
    flat = truncate_escaped(" ".join(from_markdown(text).replace("```", " ").split()), limit)
    if flat.count("`") % 2:
        flat = flat[: flat.rindex("`")].rstrip() + "…"
    return flat
