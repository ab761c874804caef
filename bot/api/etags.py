"""`If-Match` as the REST API reads it: the number in a resource's ETag (`"3"`)."""

from __future__ import annotations

import re

from fastapi import HTTPException

_IF_MATCH = re.compile(r'^\s*(?:W/)?"?(\d{1,9})"?\s*$')


def expected_number(if_match: str | None, resource: str, example: str) -> int | None:
    """The version or revision the caller last saw; `*` or no header: whatever is current.
    A header that names no number is a 400 naming the `resource` whose ETag it should be."""
    if if_match is None or if_match.strip() == "*":
        return None
    match = _IF_MATCH.match(if_match)
    if not match:
        raise HTTPException(400, f'If-Match must be the {resource}\'s ETag, e.g. "{example}"')
    return int(match.group(1))
