"""One `/agent` subcommand as it arrived, and what every subcommand handler shares: the
early answer (`Refusal`), the admin check, finding an agent by name.

Handlers live in modules named for what they own (`commands`, `agent_versions`,
`output_lookup`, …); `commands.HANDLERS` maps subcommands onto them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bot.slack.admins import may_configure
from bot.slack.blocks import Blocks
from bot.slack.runtime import SlackRuntime
from bot.slack.text import escape
from core.concurrency import run_sync
from core.errors import NotFound
from core.schemas.views import AgentView

COMMAND = "/agent"
NOT_ADMIN = (
    "Only agent admins may change agents: workspace admins and owners, and the people "
    "listed in `COSMO_SLACK_ADMINS`. Ask one of them."
)

PAGE = 200  # the largest page core hands out
MAX_PAGES = 10

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
            raise Refusal(f"Which agent? Usage: `{COMMAND} {usage}` (see `/agent list`).")
        return self.args[0].strip("`'\"").lower()


Handler = Callable[[SlackRuntime, Invocation, Any], Awaitable[Answer]]


def parse(text: str) -> tuple[str, list[str], frozenset[str]]:
    """`use sales-bot --default` -> ("use", ["sales-bot"], {"--default"})."""
    # Smart punctuation turns a typed `--default` into `—default`.
    words = ["--" + w[1:] if w.startswith("—") else w for w in text.split()]
    flags = frozenset(w.lower() for w in words if w.startswith("--"))
    rest = [w for w in words if not w.startswith("--")]
    return (rest[0].lower() if rest else "help"), rest[1:], flags


def text_answer(text: str) -> tuple[str, Blocks]:
    return text, [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]


async def require_admin(rt: SlackRuntime, tenant: str, user: str) -> None:
    if not await may_configure(rt, tenant, user):
        raise Refusal(NOT_ADMIN)


def all_agents(rt: SlackRuntime, tenant: str) -> list[AgentView]:
    """Every agent of the tenant, page after page (at most `MAX_PAGES` of `PAGE`)."""
    found: list[AgentView] = []
    cursor = None
    for _ in range(MAX_PAGES):
        page = rt.container.agents.list(tenant, cursor=cursor, limit=PAGE)
        found += page.items
        cursor = page.next_cursor
        if cursor is None:
            break
    return found


async def agent_named(rt: SlackRuntime, tenant: str, name: str) -> AgentView:
    try:
        return await run_sync(rt.container.agents.get_by_name, tenant, name)
    except NotFound:
        raise Refusal(f"There is no agent named `{escape(name)}`. See `/agent list`.") from None
