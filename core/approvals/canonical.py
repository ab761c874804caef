"""One canonical byte rendering for everything Cosmo hashes or signs.

Outsiders recompute audit hashes and check receipt signatures with their own tools, so the
rules are few and written down (docs/security.md): JSON with keys sorted, no whitespace,
non-ASCII characters as themselves, UTF-8; timestamps as UTC text with microseconds
(`2026-12-01T09:30:00.000000Z`). Anything else (a float NaN, bytes, a naive datetime) is
refused rather than guessed at.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def canonical_bytes(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False
    ).encode("utf-8")


def sha256_hex(value: Any) -> str:
    return hashlib.sha256(canonical_bytes(value)).hexdigest()


def timestamp(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("naive datetime: canonical timestamps are UTC")
    return moment.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


def storable_text(text: str) -> str:
    """Text every backend stores and returns unchanged (PostgreSQL refuses NUL; UTF-8
    cannot carry lone surrogates), so a hash taken before storing still holds after."""
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")
