"""Shared field types for the configuration models."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints

SLUG_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"

Slug = Annotated[
    str,
    StringConstraints(strip_whitespace=True, pattern=SLUG_PATTERN, min_length=1, max_length=63),
]
"""Lower-case name usable in URLs, YAML and Slack commands (`sales-bot`, `draft_email`)."""

ShortText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)]
LongText = Annotated[str, StringConstraints(max_length=20_000)]

# Slack ids: users (U/W), user groups (S), channels (C/G/D).
SLACK_PRINCIPAL = re.compile(r"^[UWS][A-Z0-9]{2,20}$")
SLACK_CHANNEL = re.compile(r"^[CGD][A-Z0-9]{2,20}$")


class StrictModel(BaseModel):
    """Input models refuse unknown fields so a typo is an error, not a silent no-op."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)
