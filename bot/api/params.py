"""Query parameters the list routes share: paging, id filters and name filters.

Each cap comes from the rule that makes the value: page sizes from `core.db.pagination`,
ids from `core.db.ids`, names from `core.schemas.common.Slug` (agents, personas, skills,
knowledge bases) and document names from `core.knowledge.service`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query

from core.db.ids import MAX_ID_LENGTH
from core.db.pagination import MAX_CURSOR_LENGTH, MAX_LIMIT
from core.knowledge.service import MAX_NAME_CHARS as MAX_DOCUMENT_NAME_CHARS
from core.schemas.common import SLUG_MAX_LENGTH

Cursor = Annotated[str | None, Query(max_length=MAX_CURSOR_LENGTH)]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]
IdFilter = Annotated[str | None, Query(max_length=MAX_ID_LENGTH)]


def _exactly(max_length: int) -> Any:
    return Query(max_length=max_length, description="Exactly this name.")


def _containing(max_length: int) -> Any:
    return Query(max_length=max_length, description="Name contains (case-insensitive).")


NameFilter = Annotated[str | None, _exactly(SLUG_MAX_LENGTH)]
ContainsFilter = Annotated[str | None, _containing(SLUG_MAX_LENGTH)]
DocumentNameFilter = Annotated[str | None, _exactly(MAX_DOCUMENT_NAME_CHARS)]
DocumentContainsFilter = Annotated[str | None, _containing(MAX_DOCUMENT_NAME_CHARS)]
