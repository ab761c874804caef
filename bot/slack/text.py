"""Turning model text into safe Slack mrkdwn, and long text into messages Slack accepts."""

from __future__ import annotations

import re

# Slack's own limit is 40k characters, but messages over a few thousand are unreadable in
# a thread and their updates are expensive; we continue in a new message past this.
MESSAGE_CHARS = 3_500


def escape(text: str) -> str:
    """Escape `&`, `<`, `>` so model text cannot ping @channel, mention users or forge
    `<url|label>` links (Slack parses those only from unescaped angle brackets)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_BREAKS = (
    re.compile(r"\n\s*\n"),
    re.compile(r"\n"),
    re.compile(r"(?<=[.!?])\s"),
    re.compile(r"\s"),
)


def split_message(text: str, limit: int = MESSAGE_CHARS) -> list[str]:
    """Split at the last paragraph, line, sentence or word break before `limit`."""
    parts: list[str] = []
    rest = text
    while len(rest) > limit:
        window = rest[:limit]
        cut = 0
        for pattern in _BREAKS:
            found = [m.end() for m in pattern.finditer(window) if m.end() > limit // 2]
            if found:
                cut = found[-1]
                break
        cut = cut or limit
        parts.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest or not parts:
        parts.append(rest)
    return parts


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


_CUT_ENTITY = re.compile(r"&[a-z]*$")


def truncate_escaped(text: str, limit: int) -> str:
    """`truncate` for text already escaped: escaping can grow text fivefold, so cut after
    it, and never through an `&amp;`-style entity."""
    if len(text) <= limit:
        return text
    return _CUT_ENTITY.sub("", text[: limit - 1]).rstrip() + "…"
