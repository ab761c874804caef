"""Engine, sessions and schema status for SQLite (embedded) and PostgreSQL."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from core.errors import SchemaOutOfDate

#: Errors that mean "the database cannot be reached right now" (down, restarting, dropped
#: connections, pool exhausted, SQLite locked): the caller should come back later, so the
#: adapters answer 503 with Retry-After instead of 500 (Slack then delivers the event again).
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,
)
#: Seconds a caller is asked to wait before trying again.
RETRY_AFTER_SECONDS = 5

READ_ONLY = "cosmo_read_only"
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent.parent / "migrations"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine with the settings each backend needs to behave under concurrency."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            **kwargs,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling breaks SAVEPOINTs; we issue BEGIN ourselves.
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def _sqlite_begin(conn: Connection) -> None:
    # Writers take the lock up front (IMMEDIATE) so busy_timeout applies; a deferred
    # transaction that reads and then writes would fail at once under contention.
    # Read-only work opts out so it never queues behind a writer (WAL lets it read).
    if conn.get_execution_options().get(READ_ONLY):
        conn.exec_driver_sql("BEGIN")
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # autocommit at the driver; SQLAlchemy issues BEGIN
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


@dataclass(frozen=True)
class SchemaStatus:
    current: str | None
    head: str

    @property
    def is_current(self) -> bool:
        return self.current == self.head


class Database:
    """Owns the engine and hands out sessions; services take this, not an engine."""

    def __init__(self, engine: Engine, session_factory: sessionmaker[Session] | None = None):
        self.engine = engine
        self._sessions = session_factory or sessionmaker(engine, expire_on_commit=False)
        self._one_at_a_time: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()

    @classmethod
    def from_url(cls, url: str) -> Database:
        return cls(make_engine(url))

    @classmethod
    def bound_to(cls, connection: Connection) -> Database:
        """Sessions that join an outer transaction as savepoints (tests roll it back)."""
        factory = sessionmaker(
            bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint"
        )
        database = cls(connection.engine, factory)
        # One connection cannot serve two threads at once (a request and a job worker):
        # their savepoints would interleave. Re-entrant: a unit of work may nest another.
        database._one_at_a_time = threading.RLock()
        return database

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One unit of work: commits when the block ends, rolls back if it raises."""
        with self._one_at_a_time, self._sessions() as session, session.begin():
            yield session

    def read_connection(self) -> Connection:
        """A connection for reads that must not wait behind writers (health, status)."""
        return self.engine.connect().execution_options(**{READ_ONLY: True})

    def ping(self) -> None:
        with self.read_connection() as conn:
            conn.execute(text("SELECT 1"))

    def schema_status(self) -> SchemaStatus:
        from alembic.runtime.migration import MigrationContext

        head = alembic_head()
        with self.read_connection() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
        return SchemaStatus(current=current, head=head)

    def require_current_schema(self) -> None:
        status = self.schema_status()
        if not status.is_current:
            raise SchemaOutOfDate(status.current, status.head)

    def dispose(self) -> None:
        self.engine.dispose()


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def alembic_head() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None, "no migrations found"
    return head


def upgrade(url: str, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    from alembic import command

    command.downgrade(alembic_config(url), revision)
