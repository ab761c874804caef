"""Query helpers shared by the configuration repositories."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, false, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.db.pagination import Page, check_limit, decode_cursor, encode_cursor
from core.errors import NameTaken


def paginate(
    session: Session,
    stmt: Select[Any],
    id_column: Any,
    *,
    cursor: str | None,
    limit: int,
) -> Page[Any]:
    """Keyset page over `id_column` ascending (ids sort by creation time)."""
    check_limit(limit)
    after = decode_cursor(cursor)
    if after is not None:
        stmt = stmt.where(id_column > after)
    rows = list(session.scalars(stmt.order_by(id_column).limit(limit + 1)).unique())
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, encode_cursor(rows[-1].id) if more and rows else None)


def storable(key: str) -> bool:
    """Whether `key` can be compared in SQL on every backend.

    PostgreSQL text cannot hold NUL and refuses the query; SQLite cuts a LIKE pattern at
    it. Nothing stored contains one (input validation refuses NUL), so such a key names
    nothing: callers answer "not found" instead of querying.
    """
    return "\x00" not in key


def name_contains(column: Any, needle: str) -> Any:
    """Case-insensitive substring match that treats `%` and `_` literally."""
    if not storable(needle):
        return false()
    escaped = needle.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return func.lower(column).like(f"%{escaped}%", escape="\\")


def name_filters(column: Any, *, name: str | None, q: str | None) -> list[Any]:
    """WHERE clauses for the list routes: `name` matches exactly, `q` is contained in the
    name (case-insensitive); either may be left out."""
    clauses: list[Any] = []
    if name:
        clauses.append(column == name if storable(name) else false())
    if q:
        clauses.append(name_contains(column, q))
    return clauses


def flush_unique(session: Session, what: str, name: str) -> None:
    """Flush, turning a unique-constraint violation into a typed 409-worthy error."""
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as exc:
        raise NameTaken(what, name) from exc


def exists_named(session: Session, model: Any, tenant_id: str, name: str) -> bool:
    stmt = select(model.id).where(model.tenant_id == tenant_id, model.name == name)
    return session.scalar(stmt) is not None
