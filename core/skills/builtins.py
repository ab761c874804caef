"""Built-in skills: Python functions registered by name in a `BuiltinCatalog`.

A skill whose executor is `{type: builtin}` runs the function registered under its
`function` (or, by default, its own name). The default catalogue holds `current_time`,
`recall_memory`, `search_knowledge` and `draft_email`; the composition root may register
more. A function receives the arguments (already checked against the skill's schema,
which admins write) and the `SkillContext`, and returns a `SkillResult`. Because the
schema is the admin's, functions still read their arguments defensively.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core.concurrency import run_sync
from core.memory.port import MemoryRecord
from core.personas.prompt import fence, knowledge_passage
from core.schemas.common import SLUG_PATTERN
from core.skills.runtime import KnowledgeHit, ProposalRenderer, SkillContext, SkillResult

BuiltinFunction = Callable[[dict[str, Any], SkillContext], Awaitable[SkillResult]]
Clock = Callable[[], datetime]

_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
DEFAULT_RESULTS = 5
MAX_RESULTS = 20


@dataclass(frozen=True)
class Builtin:
    """A registered function and, for action skills, how to show its proposal.

    `own_text`: its results are our own words, or fence any outside text themselves, so
    the engine may hand them to the model as they are. Functions the composition root adds
    default to False: their results reach the model fenced as data, like http and mcp."""

    name: str
    function: BuiltinFunction
    render: ProposalRenderer | None = None
    own_text: bool = False


class BuiltinCatalog:
    """The built-in functions skills may name. One per process, filled at start-up."""

    def __init__(self) -> None:
        self._entries: dict[str, Builtin] = {}

    @classmethod
    def default(cls, *, clock: Clock | None = None) -> BuiltinCatalog:
        """The catalogue Cosmo ships. `clock` (returning an aware datetime) is for tests."""
        catalog = cls()
        # Audited: our words only; recalled memories and knowledge passages come fenced.
        catalog.register("current_time", current_time_function(clock or _utc_now), own_text=True)
        catalog.register("recall_memory", recall_memory, own_text=True)
        catalog.register("search_knowledge", search_knowledge, own_text=True)
        catalog.register("draft_email", draft_email, render=render_email, own_text=True)
        return catalog

    def register(
        self,
        name: str,
        fn: BuiltinFunction,
        *,
        render: ProposalRenderer | None = None,
        own_text: bool = False,
    ) -> None:
        if not re.match(SLUG_PATTERN, name):
            raise ValueError(f"built-in name {name!r} must match {SLUG_PATTERN}")
        if name in self._entries:
            raise ValueError(f"a built-in named {name!r} is already registered")
        self._entries[name] = Builtin(name, fn, render, own_text)

    def get(self, name: str) -> Builtin | None:
        return self._entries.get(name)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)


class BuiltinSkillExecutor:
    """Runs one registered function."""

    def __init__(self, builtin: Builtin) -> None:
        self.builtin = builtin

    async def execute(self, arguments: dict[str, Any], ctx: SkillContext) -> SkillResult:
        return await self.builtin.function(arguments, ctx)


# --- current_time -------------------------------------------------------------------------


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _stamp(moment: datetime) -> tuple[str, str]:
    return moment.isoformat(timespec="seconds"), _WEEKDAYS[moment.weekday()]


def current_time_function(clock: Clock) -> BuiltinFunction:
    """`current_time`: UTC now with its weekday; with `timezone` (IANA), local time too."""

    async def current_time(arguments: dict[str, Any], ctx: SkillContext) -> SkillResult:
        now = clock().astimezone(UTC)
        utc, weekday = _stamp(now)
        data: dict[str, Any] = {"utc": utc, "weekday": weekday}
        lines = [f"Now (UTC): {utc}, {weekday}"]
        zone_name = arguments.get("timezone")
        if zone_name is not None:
            zone = _zone(zone_name)
            if zone is None:
                return SkillResult(
                    f"Unknown time zone {zone_name!r}: use an IANA name such as "
                    "Europe/Paris or America/New_York.",
                    is_error=True,
                )
            local, local_weekday = _stamp(now.astimezone(zone))
            data |= {"timezone": zone.key, "local": local, "local_weekday": local_weekday}
            lines.append(f"Now ({zone.key}): {local}, {local_weekday}")
        return SkillResult("\n".join(lines), data)

    return current_time


def _zone(name: object) -> ZoneInfo | None:
    if not isinstance(name, str) or not name.strip():
        return None
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        # ValueError: keys like "../etc/passwd" or absolute paths, refused by zoneinfo.
        return None


# --- recall_memory / search_knowledge -----------------------------------------------------


def _query_and_limit(arguments: dict[str, Any], skill: str) -> tuple[str, int] | SkillResult:
    query = arguments.get("query")
    if not isinstance(query, str) or not query.strip():
        return SkillResult(f"{skill} needs a non-empty `query` string.", is_error=True)
    limit = arguments.get("limit", DEFAULT_RESULTS)
    if not isinstance(limit, int) or isinstance(limit, bool):
        limit = DEFAULT_RESULTS
    return query.strip(), max(1, min(limit, MAX_RESULTS))


async def recall_memory(arguments: dict[str, Any], ctx: SkillContext) -> SkillResult:
    """What this user told this agent before, most relevant first."""
    if ctx.memory is None:
        return SkillResult(
            "Memory is turned off for this agent, so there is nothing to recall.",
            {"memories": [], "memory_enabled": False},
        )
    parsed = _query_and_limit(arguments, "recall_memory")
    if isinstance(parsed, SkillResult):
        return parsed
    query, limit = parsed
    # The port is synchronous (embedding blocks): keep it off the event loop.
    records = await run_sync(
        ctx.memory.search,
        ctx.tenant_id,
        query,
        user_id=ctx.user_id,
        agent_id=ctx.agent_id,
        limit=limit,
    )
    records = records[:limit]
    if not records:
        return SkillResult(f"No memories match {query!r}.", {"memories": []})
    memories = [_memory_data(r) for r in records]
    lines = []
    for i, memory in enumerate(memories, 1):
        details = [f"score {memory['score']:.2f}" if memory["score"] is not None else None]
        details.append(memory["created_at"][:10] if memory["created_at"] else None)
        shown = ", ".join(d for d in details if d)
        lines.append(f"{i}. {memory['text']}" + (f" ({shown})" if shown else ""))
    # What users said before is outside text: fenced like the memories in the prompt.
    listed = fence("\n".join(lines), source="memory")
    return SkillResult(f"Memories matching {query!r}:\n{listed}", {"memories": memories})


def _memory_data(record: MemoryRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "text": record.text,
        "score": record.score,
        "created_at": record.created_at.isoformat(),
    }


async def search_knowledge(arguments: dict[str, Any], ctx: SkillContext) -> SkillResult:
    """Passages from the agent's knowledge bases, best first, each with its source."""
    if ctx.knowledge is None:
        return SkillResult(
            "This agent has no knowledge base to search.",
            {"hits": [], "knowledge_enabled": False},
        )
    parsed = _query_and_limit(arguments, "search_knowledge")
    if isinstance(parsed, SkillResult):
        return parsed
    query, limit = parsed
    hits: list[KnowledgeHit] = list(await run_sync(ctx.knowledge.search, query, limit))
    hits = hits[:limit]
    if not hits:
        return SkillResult(f"Nothing in the knowledge base matches {query!r}.", {"hits": []})
    # Numbered and fenced like the passages in the system prompt: one numbering per turn
    # (the engine sets `number`), and the text is data, never instructions.
    numbers = [hit.number or i for i, hit in enumerate(hits, 1)]
    lines = [f"Knowledge matching {query!r} (cite a passage by its id, like [{numbers[0]}]):"]
    for number, hit in zip(numbers, hits, strict=True):
        lines.append(
            knowledge_passage(
                hit.text, number, hit.source, hit.section, hit.page, score=f"{hit.score:.2f}"
            )
        )
    data = [
        {
            "number": number,
            "text": h.text,
            "source": h.source,
            "section": h.section,
            "page": h.page,
            "score": h.score,
        }
        for number, h in zip(numbers, hits, strict=True)
    ]
    return SkillResult("\n".join(lines), {"hits": data})


# --- draft_email ----------------------------------------------------------------------------


def _addresses(value: object) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list):
        return ", ".join(str(v).strip() for v in value if str(v).strip())
    return ""


def email_fields(arguments: dict[str, Any]) -> dict[str, Any]:
    """The email as stored: addresses as strings, absent ones left out."""
    email: dict[str, Any] = {"to": _addresses(arguments.get("to"))}
    for field in ("cc", "bcc"):
        if _addresses(arguments.get(field)):
            email[field] = _addresses(arguments.get(field))
    email["subject"] = str(arguments.get("subject") or "").strip()
    email["body"] = str(arguments.get("body") or "")
    return email


def render_email(arguments: dict[str, Any]) -> tuple[str, str]:
    """The draft as a reviewer reads it: headers, a blank line, the body (markdown)."""
    email = email_fields(arguments)
    lines = [f"**To:** {email['to'] or '(no recipient)'}"]
    if "cc" in email:
        lines.append(f"**Cc:** {email['cc']}")
    if "bcc" in email:
        lines.append(f"**Bcc:** {email['bcc']}")
    lines.append(f"**Subject:** {email['subject'] or '(no subject)'}")
    return "\n".join(lines) + "\n\n" + email["body"].strip() + "\n", "text/markdown"


async def draft_email(arguments: dict[str, Any], ctx: SkillContext) -> SkillResult:
    """Returns the final email. Cosmo never sends mail: whoever approves the draft sends it."""
    email = email_fields(arguments)
    return SkillResult(
        f"Email to {email['to'] or '(no recipient)'} is ready: {email['subject']!r}. "
        "It has not been sent; the reviewer sends it from their inbox.",
        {"email": email},
    )
