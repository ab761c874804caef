"""REST-only shapes (pages, requests that exist only over HTTP)."""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel, Field

from core.db.pagination import Page

T = TypeVar("T")


class PageOut(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")

    @classmethod
    def of(cls, page: Page[T]) -> PageOut[T]:
        return cls(items=page.items, next_cursor=page.next_cursor)


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[dict[str, object]] | None = None


class RollbackRequest(BaseModel):
    version: int = Field(ge=1)


class ChangeOut(BaseModel):
    kind: str
    name: str
    action: str
    fields: list[str]


class ApplyReportOut(BaseModel):
    changed: bool
    dry_run: bool
    changes: list[ChangeOut]
