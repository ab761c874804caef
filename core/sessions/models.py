"""Read models and records of sessions and turns."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.knowledge.citations import Citation


class Usage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = Field(default=0.0, description="Estimated from the price table.")


class SessionView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    tenant_id: str
    agent_id: str
    user_id: str
    user_name: str | None
    channel_id: str | None
    channel_name: str | None
    thread_ts: str | None
    source: str
    external_key: str | None
    status: Literal["active", "ended"]
    context: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    ended_at: datetime | None
    usage: Usage


class MessageView(BaseModel):
    seq: int
    role: str
    content: list[dict[str, Any]]
    turn_id: str | None
    created_at: datetime


class TurnView(BaseModel):
    id: str
    tenant_id: str
    session_id: str
    agent_id: str
    status: Literal["pending", "running", "completed", "failed", "cancelled"]
    user_id: str
    user_message: str
    reply: str | None
    steps: list[dict[str, Any]]
    model: str | None
    usage: Usage
    error: str | None
    citations: list[Citation] = Field(
        default_factory=list,
        description="Knowledge passages the reply cites with [n] markers, in first-cited order.",
    )
    payload: dict[str, Any] = Field(default_factory=dict, exclude=True)
    created_at: datetime
    finished_at: datetime | None


@dataclass
class TurnRecord:
    """What the engine hands back to be stored when a turn ends."""

    status: Literal["completed", "failed"]
    reply: str
    model: str | None
    steps: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_micros: int = 0
    error: str | None = None
    citations: list[Citation] = field(default_factory=list)


@dataclass(frozen=True)
class SessionNames:
    """Display names of a session's user and channel, found after it was opened."""

    session_id: str
    user_name: str
    channel_name: str


class UsageTotals(BaseModel):
    """Usage summed over a scope (an agent, a day, a session)."""

    turns: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: float
