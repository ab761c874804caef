"""Keyset pagination on time-sortable primary keys, with opaque cursors."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Generic, TypeVar

from core.errors import FieldError, ValidationFailed

T = TypeVar("T")
_ID = re.compile(r"^[a-z]{2,5}_[0-9a-z]{26}$")
#: Page sizes: what a list returns unless asked, and the most it returns.
DEFAULT_LIMIT = 50
MAX_LIMIT = 200
#: A cursor we issue is about 40 characters; anything this long is not one of ours.
MAX_CURSOR_LENGTH = 200


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> str | None:
    """The id to continue after; a cursor we did not mint is a 422, not a 500."""
    if not cursor:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = base64.urlsafe_b64decode(padded.encode("ascii")).decode("ascii")
    except (binascii.Error, UnicodeError, ValueError):
        value = ""
    if not _ID.match(value):
        raise ValidationFailed([FieldError(("query", "cursor"), "not a cursor this API issued")])
    return value


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationFailed(
            [FieldError(("query", "limit"), f"must be between 1 and {MAX_LIMIT}")]
        )
    return limit
