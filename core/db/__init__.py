"""Persistence: tables, engine/sessions, repositories, migrations status."""

from core.db.database import (
    DATABASE_UNAVAILABLE,
    RETRY_AFTER_SECONDS,
    Database,
    SchemaStatus,
    downgrade,
    make_engine,
    upgrade,
)

__all__ = [
    "DATABASE_UNAVAILABLE",
    "RETRY_AFTER_SECONDS",
    "Database",
    "SchemaStatus",
    "downgrade",
    "make_engine",
    "upgrade",
]
