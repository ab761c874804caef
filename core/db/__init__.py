"""Persistence: tables, engine/sessions, repositories, migrations status."""

from core.db.database import Database, SchemaStatus, downgrade, make_engine, upgrade

__all__ = ["Database", "SchemaStatus", "downgrade", "make_engine", "upgrade"]
