"""What a log line is about (tenant, request, turn, output, job), carried in a context
variable so every line logged while handling it says so, whichever module logs it.

Context variables follow the work into `run_sync` threads and tasks it starts, so a line
logged deep in core during a turn still names the turn."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

FIELDS = ("tenant", "request_id", "job_id", "turn_id", "output_id")
_current: ContextVar[dict[str, str]] = ContextVar("cosmo_log_context", default={})  # noqa: B039 - never mutated


@contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    """Add fields for the duration of the block (None values are left out)."""
    added = {k: v for k, v in fields.items() if v}
    token = _current.set({**_current.get(), **added})
    try:
        yield
    finally:
        _current.reset(token)


def bind(**fields: str | None) -> None:
    """Add fields to the current context until the enclosing task or request ends."""
    added = {k: v for k, v in fields.items() if v}
    if added:
        _current.set({**_current.get(), **added})


def current() -> dict[str, str]:
    return _current.get()
