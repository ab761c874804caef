"""Identifiers: a type prefix plus a ULID, so ids sort by creation time.

Sortable ids let lists paginate on the primary key alone (keyset pagination) and
make a stray id in a log self-describing (`agt_…` is an agent).
"""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower-case
_lock = threading.Lock()

# Prefixes of the ids that REST routes also accept names for (see `is_id_of`).
AGENT_ID_PREFIX = "agt"
KNOWLEDGE_BASE_ID_PREFIX = "kb"
DOCUMENT_ID_PREFIX = "doc"
#: Longer than any id `new_id` makes (a prefix of up to five letters, `_`, 26 characters):
#: the cap on ids that arrive from outside.
MAX_ID_LENGTH = 40
_last_ms = 0
_last_rand = 0


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, rem = divmod(value, 32)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    """`prefix_` + 26-char ULID; monotonic within a process even inside one millisecond."""
    global _last_ms, _last_rand
    with _lock:
        now = time.time_ns() // 1_000_000
        if now <= _last_ms:
            now = _last_ms
            _last_rand += 1
        else:
            _last_rand = int.from_bytes(os.urandom(10), "big") >> 1
        _last_ms = now
        rand = _last_rand
    return f"{prefix}_{_encode(now, 10)}{_encode(rand, 16)}"


def is_id_of(ref: str, prefix: str) -> bool:
    """Whether `ref` has the shape of an id `new_id(prefix)` makes.

    Routes that take an id *or* a name decide by shape alone: an id-shaped reference is
    looked up as an id and nothing else, so no name can shadow another row's id (and names
    of that shape are refused where names are chosen).
    """
    body = ref.removeprefix(f"{prefix}_")
    return (
        len(ref) == len(prefix) + 27
        and ref.startswith(f"{prefix}_")
        and all(ch in _ALPHABET for ch in body)
    )
