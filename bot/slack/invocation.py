"""What a `/agent` subcommand receives and how it answers (shared by the command modules)."""

from __future__ import annotations

from dataclasses import dataclass

from bot.slack import admin_blocks as ui
from bot.slack.blocks import Blocks

Answer = tuple[str, Blocks] | None


class Refusal(Exception):
    """A plain answer that ends a command early (bad input, not allowed, nothing to do)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


@dataclass(frozen=True)
class Invocation:
    tenant: str
    user: str
    channel: str
    trigger_id: str
    subcommand: str
    args: list[str]
    flags: frozenset[str]
    text: str = ""
    """The command's text as typed (for arguments words cannot hold, such as JSON)."""

    @property
    def is_dm(self) -> bool:
        return self.channel.startswith("D")

    def name(self, usage: str) -> str:
        """The NAME argument: agent names are lower-case slugs, so `Sales-Bot` finds it."""
        if not self.args:
            raise Refusal(f"Which agent? Usage: `{ui.COMMAND} {usage}` (see `/agent list`).")
        return self.args[0].strip("`'\"").lower()


def parse(text: str) -> tuple[str, list[str], frozenset[str]]:
    """`use sales-bot --default` -> ("use", ["sales-bot"], {"--default"})."""
    # Smart punctuation turns a typed `--default` into `—default`.
    words = ["--" + w[1:] if w.startswith("—") else w for w in text.split()]
    flags = frozenset(w.lower() for w in words if w.startswith("--"))
    rest = [w for w in words if not w.startswith("--")]
    return (rest[0].lower() if rest else "help"), rest[1:], flags


def text_answer(text: str) -> Answer:
    return text, [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
