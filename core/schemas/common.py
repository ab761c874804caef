"""Shared field types for the configuration models."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, SecretStr, StringConstraints, field_validator

SLUG_MAX_LENGTH = 63
SLUG_PATTERN = rf"^[a-z][a-z0-9_-]{{0,{SLUG_MAX_LENGTH - 1}}}$"

Slug = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, pattern=SLUG_PATTERN, min_length=1, max_length=SLUG_MAX_LENGTH
    ),
]
"""Lower-case name usable in URLs, YAML and Slack commands (`sales-bot`, `draft_email`)."""


def refuse_id_shaped(name: str, prefix: str, what: str) -> str:
    """REST routes take an id or a name and treat an id-shaped reference as an id
    (core.db.ids.is_id_of): a name of that shape could never be used, so it is refused."""
    from core.db.ids import is_id_of

    if is_id_of(name, prefix):
        raise ValueError(f"has the shape of {what} id ({prefix}_ + 26 characters); choose a name")
    return name


ShortText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)]
LongText = Annotated[str, StringConstraints(max_length=20_000)]

# Slack ids: users (U/W), user groups (S), channels (C/G/D).
SLACK_PRINCIPAL = re.compile(r"^[UWS][A-Z0-9]{2,20}$")
SLACK_CHANNEL = re.compile(r"^[CGD][A-Z0-9]{2,20}$")


#: Free-form JSON (input schemas, body templates) deeper than this is refused: recursive
#: schema checks and serialisers would overflow the stack long before any real use needs it.
MAX_JSON_DEPTH = 64


def check_storable(value: Any, *, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Refuse input no backend can keep: NUL characters (PostgreSQL text and JSONB cannot
    hold them), NaN/Infinity, and containers nested deeper than `max_depth`. Nested models
    are skipped: their own fields were checked, with their own paths."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, SecretStr):
            item = item.get_secret_value()
        if isinstance(item, str):
            if "\x00" in item:
                raise ValueError("must not contain NUL (\\u0000) characters")
        elif isinstance(item, float):
            # Python's JSON and YAML parsers accept NaN/Infinity; PostgreSQL's JSONB does not.
            if not math.isfinite(item):
                raise ValueError("must not contain NaN or Infinity (JSON has no such numbers)")
        elif isinstance(item, dict | list | tuple):
            if depth >= max_depth:
                raise ValueError(f"is nested more than {max_depth} levels deep")
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


class StrictModel(BaseModel):
    """Input models refuse unknown fields so a typo is an error, not a silent no-op."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    @field_validator("*")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        check_storable(value)
        return value
