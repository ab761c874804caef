"""The `ModelClient` port: what the agent needs from Claude, with no SDK in sight."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from core.errors import CosmoError

TextSink = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class ModelUsage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """What the token quota counts: every token billed, cached ones included."""
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_write_tokens
        )


@dataclass(frozen=True)
class ModelReply:
    """One assistant message: content blocks as plain dicts (Messages API form)."""

    content: list[dict[str, Any]]
    stop_reason: str | None
    usage: ModelUsage
    model: str
    request_id: str | None = None

    @property
    def text(self) -> str:
        return "".join(b.get("text", "") for b in self.content if b.get("type") == "text")

    @property
    def tool_uses(self) -> list[dict[str, Any]]:
        return [b for b in self.content if b.get("type") == "tool_use"]


@dataclass(frozen=True)
class ModelRequest:
    model: str
    system: list[dict[str, Any]]
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = field(default_factory=list)
    max_tokens: int = 4096


class ModelError(CosmoError):
    """Claude could not answer. `user_message` is safe to show in Slack."""

    title = "Model unavailable"

    def __init__(self, detail: str, *, user_message: str, retryable: bool) -> None:
        super().__init__(detail)
        self.user_message = user_message
        self.retryable = retryable


class ModelClient(Protocol):
    """What the agent needs from Claude: one streamed completion at a time."""

    async def complete(
        self, request: ModelRequest, on_text: TextSink | None = None
    ) -> ModelReply: ...


class ModelOnFirstUse:
    """A `ModelClient` that builds the real one when first asked.

    `cosmo serve` never calls Claude (workers run the turns), yet importing the SDK cost
    every replica 1.8 s of CPU at start here. Processes that do run turns call `build()`
    as they start, so no turn pays for the import on its event loop.
    """

    def __init__(self, factory: Callable[[], ModelClient]) -> None:
        self._factory = factory
        self._client: ModelClient | None = None
        self._lock = threading.Lock()

    def build(self) -> ModelClient:
        with self._lock:
            if self._client is None:
                self._client = self._factory()
            return self._client

    async def complete(self, request: ModelRequest, on_text: TextSink | None = None) -> ModelReply:
        return await self.build().complete(request, on_text)
