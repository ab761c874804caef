"""The `OutputStore` port: content in a blob store, metadata in an index."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from pydantic import BaseModel

from core.db.pagination import Page


class OutputStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"  # transient: decided, execution not finished yet
    EXECUTED = "executed"
    MANUAL = "manual"
    EXECUTION_FAILED = "execution_failed"
    REJECTED = "rejected"
    EXPIRED = "expired"


class NotificationStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "notification_failed"


@dataclass(frozen=True)
class NewOutput:
    tenant_id: str
    agent_id: str
    session_id: str
    skill: str
    is_automatable: bool
    arguments: dict[str, Any]
    content: str
    content_type: str = "text/markdown"
    turn_id: str | None = None
    requested_by: str | None = None
    expires_at: datetime | None = None


class Output(BaseModel):
    """An output's metadata as every store returns it."""

    id: str
    tenant_id: str
    agent_id: str
    session_id: str
    turn_id: str | None = None
    skill: str
    is_automatable: bool
    arguments: dict[str, Any]
    content_type: str
    content_sha256: str
    content_size: int
    preview: str
    status: OutputStatus
    requested_by: str | None = None
    decided_by: str | None = None
    decided_at: datetime | None = None
    decision_reason: str | None = None
    decision_via: str | None = None
    execution_result: dict[str, Any] | None = None
    execution_error: str | None = None
    executed_at: datetime | None = None
    notification_status: NotificationStatus = NotificationStatus.PENDING
    slack_channel: str | None = None
    slack_ts: str | None = None
    expires_at: datetime | None = None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class OutputFilter:
    agent_id: str | None = None
    session_id: str | None = None
    status: OutputStatus | None = None
    skill: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


PREVIEW_CHARS = 500


def preview_of(content: str) -> str:
    text = content.strip()
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1].rstrip() + "…"


class OutputStore(Protocol):
    """Where outputs live. Content is written before metadata, so metadata never dangles."""

    name: str

    def create(self, new: NewOutput) -> Output: ...

    def get(self, tenant_id: str, output_id: str) -> Output: ...

    def list(
        self, tenant_id: str, filters: OutputFilter, *, cursor: str | None, limit: int
    ) -> Page[Output]: ...

    def read_content(self, tenant_id: str, output_id: str) -> bytes: ...
