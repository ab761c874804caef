"""The `MemoryProvider` port: what the agent engine needs from long-term memory.

Every call is scoped by `tenant_id`; a tenant never sees, finds, deletes or clears another
tenant's memories, whatever ids it passes. Memories belong to a Slack user (`user_id`) and
an agent (`agent_id`); `session_id` records the conversation they came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from core.errors import FieldError, ValidationFailed


class InvalidMemoryArgument(ValidationFailed, ValueError):
    """A bad id, limit or scope. Also a `ValueError`, as the port promises, and a
    `ValidationFailed`, so the REST layer answers 422 naming the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__([FieldError((field,), message)])


@dataclass(frozen=True)
class MemoryMessage:
    """One message of the exchange handed to `add` (the engine's view of a turn)."""

    role: Literal["user", "assistant"]
    content: str


@dataclass(frozen=True)
class MemoryRecord:
    """A stored memory as callers see it: provider-neutral, tenant namespace stripped."""

    id: str
    text: str
    user_id: str | None
    agent_id: str | None
    session_id: str | None
    created_at: datetime
    score: float | None = None  # set by search (higher = more relevant)


class MemoryProvider(Protocol):
    """Sync on purpose (mem0 and the DB are sync); async callers use a worker thread.

    Implementations must be safe to call from several threads at once.

    - `add` stores what is worth recalling from an exchange and returns what it stored
      (a provider that extracts memories asynchronously may return an empty list).
    - `search` ranks the user's memories (of one agent, or of all agents when `agent_id`
      is None) by relevance to `query`, best first, at most `limit`.
    - `list` returns memories newest first, narrowed by whichever of user/agent is given.
    - `delete` returns False when the id does not exist *in this tenant*.
    - `clear` deletes every memory of a user and/or an agent and returns how many; at
      least one of them is required, so nobody wipes a tenant by forgetting an argument.

    Bad arguments (empty or over-long ids, a negative limit, `clear` with neither id)
    raise `InvalidMemoryArgument`, which is a `ValueError`.
    """

    name: str

    def add(
        self,
        tenant_id: str,
        messages: Sequence[MemoryMessage],
        *,
        user_id: str,
        agent_id: str,
        session_id: str | None = None,
    ) -> list[MemoryRecord]: ...

    def search(
        self,
        tenant_id: str,
        query: str,
        *,
        user_id: str,
        agent_id: str | None = None,
        limit: int = 5,
    ) -> list[MemoryRecord]: ...

    def list(
        self,
        tenant_id: str,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        limit: int = 100,
    ) -> list[MemoryRecord]: ...

    def delete(self, tenant_id: str, memory_id: str) -> bool: ...

    def clear(
        self, tenant_id: str, *, user_id: str | None = None, agent_id: str | None = None
    ) -> int: ...
