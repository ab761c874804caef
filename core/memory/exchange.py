"""What a turn leaves behind in long-term memory when no LLM distils it.

Without a model to extract facts, `add` keeps:

* each **user message**, verbatim (whitespace collapsed, capped at `USER_LIMIT` chars):
  that is where facts about the user live — names, preferences, ticket ids;
* one **compact assistant note** per reply, `"assistant: …"` capped at `ASSISTANT_LIMIT`
  chars: enough to recall what was answered or promised, not the whole reply.

They are separate memories rather than one "exchange" memory because a long answer would
otherwise dilute the embedding of the user's short statement (and push it past the
model's 256-word-piece window), and because feeding whole model answers back into later
prompts amplifies the model's own mistakes. The session id ties the pieces together.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from core.memory.port import InvalidMemoryArgument, MemoryMessage

USER_LIMIT = 2000
ASSISTANT_LIMIT = 280
ASSISTANT_PREFIX = "assistant: "
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class MemoryText:
    role: Literal["user", "assistant"]
    text: str


def clip(text: str, limit: int) -> str:
    """Collapse whitespace and cut at a word boundary, marking the cut with an ellipsis."""
    flat = _SPACE.sub(" ", text).strip()
    if len(flat) <= limit:
        return flat
    cut = flat[: limit - 1]
    space = cut.rfind(" ")
    if space >= limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:.-") + "…"


def memory_texts(messages: Sequence[MemoryMessage]) -> list[MemoryText]:
    """The memories to store for an exchange, in message order; empty messages are skipped."""
    out: list[MemoryText] = []
    for message in messages:
        if message.role == "user":
            text = clip(message.content, USER_LIMIT)
            if text:
                out.append(MemoryText("user", text))
        elif message.role == "assistant":
            body = clip(message.content, ASSISTANT_LIMIT - len(ASSISTANT_PREFIX))
            if body:
                out.append(MemoryText("assistant", ASSISTANT_PREFIX + body))
        else:  # pragma: no cover - the Literal type already rules this out
            raise InvalidMemoryArgument("messages", f"unknown role {message.role!r}")
    return out
