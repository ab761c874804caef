"""Engine, sessions and schema status for SQLite (embedded) and PostgreSQL."""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Connection,
    Engine,
    create_engine,
    delete,
    event,
    insert,
    inspect,
    text,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

from core.errors import SchemaOutOfDate

if TYPE_CHECKING:
    from core.db.loop_connections import LoopConnections

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


#: How long a prompt write (`Database.prompt`) keeps trying a locked SQLite database: the
#: same patience as every other connection's busy_timeout.
PROMPT_PATIENCE = 30.0
#: Its retries: every 0.1 ms at first, at most 2 ms apart. SQLite's own busy handler sleeps
#: 1, 2, 5, 10 ... ms, so an insert that found a worker mid-commit lost a millisecond or
#: more even when the lock came free microseconds later.
PROMPT_RETRY = (0.0001, 0.002)
_SQLITE_BUSY = 5  # the primary result code; extended codes keep it in their low byte


def libpq_dsn(url: str | URL) -> str:
    """A PostgreSQL URL as psycopg (libpq) takes it: without SQLAlchemy's "+psycopg"."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine with the settings each backend needs to behave under concurrency."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = _sqlite_engine(url, busy_timeout_ms=30_000, **kwargs)
        # pysqlite's own transaction handling breaks SAVEPOINTs; we issue BEGIN ourselves.
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def _prompt_engine(url: str) -> Engine:
    """The engine behind `Database.prompt`: every statement commits by itself (no BEGIN
    and COMMIT round trips), SQLite answers "locked" at once so we retry on our own
    schedule, and PostgreSQL's pool skips the pre-ping round trip (a dead connection is
    retried instead, where the caller allows it). A few connections: one group commit
    at a time uses them."""
    if make_url(url).get_backend_name() == "sqlite":
        engine = _sqlite_engine(url, busy_timeout_ms=0)
        # Its commits may run on an event loop (`Database.prompt_now`): a checkpoint (page
        # copies and an fsync) must not run there. Every other connection still checkpoints.
        event.listen(engine, "connect", _no_autocheckpoint)
        return engine
    return create_engine(
        url, isolation_level="AUTOCOMMIT", pool_pre_ping=False, pool_size=2, max_overflow=2
    )


def _no_autocheckpoint(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.execute("PRAGMA wal_autocheckpoint=0")


def _sqlite_engine(url: str, *, busy_timeout_ms: int, **kwargs: Any) -> Engine:
    parsed = make_url(url)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": busy_timeout_ms / 1000},
        **kwargs,
    )
    event.listen(engine, "connect", functools.partial(_sqlite_pragmas, busy_timeout_ms))
    return engine


def _sqlite_begin(conn: Connection) -> None:
    # Writers take the lock up front (IMMEDIATE) so busy_timeout applies; a deferred
    # transaction that reads and then writes would fail at once under contention.
    # Read-only work opts out so it never queues behind a writer (WAL lets it read).
    if conn.get_execution_options().get(READ_ONLY):
        conn.exec_driver_sql("BEGIN")
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _sqlite_pragmas(busy_timeout_ms: int, dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # autocommit at the driver; SQLAlchemy issues BEGIN
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


@dataclass(frozen=True)
class SchemaStatus:
    current: str | None
    head: str
    compatible_from: str | None = None
    """When the schema is ahead of this code: the oldest code revision the newer
    migrations still support (recorded by `cosmo db upgrade`)."""

    @property
    def is_current(self) -> bool:
        return self.current == self.head

    @property
    def is_ahead(self) -> bool:
        """Migrated by a newer release than this code (a revision this code does not know)."""
        return self.current is not None and self.current not in known_revisions()

    @property
    def is_usable(self) -> bool:
        """This code may run against the schema: current, or ahead by expand migrations only
        (the newest contract migration is not newer than this code's head)."""
        if self.is_current:
            return True
        return (
            self.is_ahead
            and self.compatible_from is not None
            and revision_key(self.compatible_from) <= revision_key(self.head)
        )


class Database:
    """Owns the engine and hands out sessions; services take this, not an engine."""

    def __init__(self, engine: Engine, session_factory: sessionmaker[Session] | None = None):
        self.engine = engine
        self._sessions = session_factory or sessionmaker(engine, expire_on_commit=False)
        self._turns: threading.RLock | None = None
        self._prompt: Engine | None = None
        self._prompt_lock = threading.Lock()
        self._loop_connections: LoopConnections | None = None

    @classmethod
    def from_url(cls, url: str) -> Database:
        return cls(make_engine(url))

    @classmethod
    def bound_to(cls, connection: Connection) -> Database:
        """Sessions that join an outer transaction as savepoints (tests roll it back)."""
        factory = sessionmaker(
            bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint"
        )
        db = cls(connection.engine, factory)
        # One connection serves every thread (request handlers, an in-process job worker):
        # units of work take turns, or their savepoints would interleave.
        db._turns = threading.RLock()
        return db

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self, *, durable: bool = True) -> Iterator[Session]:
        """One unit of work: commits when the block ends, rolls back if it raises.

        `durable=False`: on PostgreSQL the commit does not wait for the WAL to reach the
        disk (`synchronous_commit` off, for this transaction only). It is still atomic and
        ordered: only a crash of the database server can lose it, with the last fraction of
        a second of such commits, and never one that a durable commit followed (that one's
        flush carries it). Only for writes whose loss is harmless: work a crash already
        makes us redo (a job's end: its worker may die just before writing it), or data
        derived from what is durable (a memory). Every durable commit waits for its own
        flush, and the Slack ack's insert queues behind the others'. SQLite (WAL,
        synchronous=NORMAL) never syncs at commit."""
        with self._turns or contextlib.nullcontext(), self._sessions() as session, session.begin():
            if not durable and self.backend == "postgresql":
                session.execute(text("SET LOCAL synchronous_commit TO OFF"))
            yield session

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """A unit of work that only reads. On SQLite it begins a deferred transaction, so it
        never queues behind a writer (WAL lets it read) nor holds up one: a worker asking
        twice a second whether its jobs were cancelled must not take the write lock that
        the Slack ack path's insert is waiting for."""
        with self.session() as s:
            s.connection(execution_options={READ_ONLY: True})
            yield s

    def prompt(
        self,
        statement: Any,
        params: Sequence[dict[str, Any]] | dict[str, Any] | None = None,
        *,
        idempotent: bool = False,
    ) -> list[Any]:
        """Run one statement that commits by itself, for the Slack ack path's insert, and
        return its rows. It waits for nothing but the write itself: on SQLite it retries a
        locked database every fraction of a millisecond (see `PROMPT_RETRY`) rather than
        sleeping in SQLite's busy handler, so a worker's commit delays it by no more than
        that commit; on PostgreSQL it costs one round trip (no pre-ping, no BEGIN/COMMIT).

        A connection found dead (PostgreSQL restarted) is retried once on a new one when
        the caller says running the statement twice is harmless (`idempotent`): without
        the pre-ping, that is how a stale pooled connection is noticed."""
        if not self._may_prompt():
            with self.session() as s:
                return list(s.execute(statement, params))
        deadline = time.monotonic() + PROMPT_PATIENCE
        pause, longest = PROMPT_RETRY
        reconnected = False
        while True:
            try:
                return self._prompt_once(statement, params)
            except sa_exc.DBAPIError as exc:
                if _is_locked(exc) and time.monotonic() < deadline:
                    time.sleep(pause)
                    pause = min(pause * 2, longest)
                    continue
                if exc.connection_invalidated and idempotent and not reconnected:
                    reconnected = True
                    continue
                raise

    def prompt_now(
        self, statement: Any, params: Sequence[dict[str, Any]] | dict[str, Any] | None = None
    ) -> list[Any] | None:
        """`prompt` for an event loop: one attempt that never waits, or None. Only on
        SQLite, where the write is a tenth of a millisecond of local work when its lock is
        free; None when the lock is taken (and always on PostgreSQL, whose round trip is
        waiting): the caller then runs `prompt` in a thread."""
        if self.backend != "sqlite" or not self._may_prompt():
            return None
        try:
            return self._prompt_once(statement, params)
        except sa_exc.DBAPIError as exc:
            if _is_locked(exc):
                return None
            raise

    async def prompt_async(
        self, sql: str, params: Sequence[Any], *, idempotent: bool = False
    ) -> list[tuple[Any, ...]] | None:
        """`prompt` awaited on the event loop, on PostgreSQL: one raw statement (psycopg's
        placeholders, positional `params`) on a connection of the loop's own
        (`core.db.loop_connections`), so the round trip costs no thread hop and none of
        SQLAlchemy's statement handling. None where there is none (SQLite, whose write is
        local work: `prompt_now`; a database bound to a test's connection): the caller then
        takes the `prompt` path."""
        if self.backend != "postgresql" or not self._may_prompt():
            return None
        if self._loop_connections is None:
            with self._prompt_lock:
                if self._loop_connections is None:
                    # psycopg is imported only where PostgreSQL is used.
                    from core.db.loop_connections import LoopConnections

                    self._loop_connections = LoopConnections(libpq_dsn(self.engine.url))
        return await self._loop_connections.run(sql, params, idempotent=idempotent)

    def _may_prompt(self) -> bool:
        """False when bound to a test's connection (its savepoints), or on a database only
        this engine's connection can see: a prompt engine of its own would miss both."""
        return self._turns is None and self.engine.url.database not in (None, "", ":memory:")

    def _prompt_once(
        self, statement: Any, params: Sequence[dict[str, Any]] | dict[str, Any] | None
    ) -> list[Any]:
        with self._prompt_engine().connect() as conn:
            rows = list(conn.execute(statement, params))
            conn.commit()
            return rows

    def _prompt_engine(self) -> Engine:
        if self._prompt is None:
            with self._prompt_lock:
                if self._prompt is None:
                    self._prompt = _prompt_engine(
                        self.engine.url.render_as_string(hide_password=False)
                    )
        return self._prompt

    def read_connection(self) -> Connection:
        """A connection for reads that must not wait behind writers (health, status)."""
        return self.engine.connect().execution_options(**{READ_ONLY: True})

    def schema_status(self) -> SchemaStatus:
        from alembic.runtime.migration import MigrationContext

        head = alembic_head()
        with self.read_connection() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
            compatible_from = None
            if current is not None and current not in known_revisions():
                compatible_from = _read_compat(conn)
        return SchemaStatus(current=current, head=head, compatible_from=compatible_from)

    def require_current_schema(self) -> None:
        """Refuse a schema this code cannot run against: behind it, or ahead of it by a
        contract migration. Ahead by expand migrations only is fine (rolling upgrades)."""
        status = self.schema_status()
        if not status.is_usable:
            raise SchemaOutOfDate(status.current, status.head, ahead=status.is_ahead)

    def dispose(self) -> None:
        self.engine.dispose()
        if self._prompt is not None:
            self._prompt.dispose()
        if self._loop_connections is not None:
            self._loop_connections.close()


def _is_locked(exc: sa_exc.DBAPIError) -> bool:
    code = getattr(exc.orig, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF == _SQLITE_BUSY


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
    _record_compat(url)


def revision_key(revision: str) -> tuple[int, str]:
    """Order of our revision ids ("0007" < "0011"); ids are zero-padded sequence numbers,
    so a release can compare a revision it does not know with its own head."""
    return (int(revision), revision) if revision.isdigit() else (-1, revision)


@functools.cache
def known_revisions() -> frozenset[str]:
    return frozenset(_phases())


@functools.cache
def _phases() -> dict[str, str]:
    """Each migration's rolling-upgrade phase (`expand` or `contract`), by revision."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return {
        script.revision: str(getattr(script.module, "phase", "contract"))
        for script in scripts.walk_revisions()
    }


def compatible_from(current: str) -> str:
    """The oldest code revision that works against a schema at `current`: the newest
    contract migration at or before it (expand migrations keep older code working)."""
    contracts = [
        rev
        for rev, phase in _phases().items()
        if phase == "contract" and revision_key(rev) <= revision_key(current)
    ]
    return max(contracts, key=revision_key) if contracts else current


def _record_compat(url: str) -> None:
    from alembic.runtime.migration import MigrationContext

    from core.db.models import SchemaCompatRow

    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
            if current is None or not inspect(conn).has_table(SchemaCompatRow.__tablename__):
                return
            conn.execute(delete(SchemaCompatRow))
            conn.execute(
                insert(SchemaCompatRow).values(
                    id=1, compatible_from=compatible_from(current), updated_at=datetime.now(UTC)
                )
            )
    finally:
        engine.dispose()


def _read_compat(conn: Connection) -> str | None:
    try:
        row = conn.execute(text("SELECT compatible_from FROM schema_compat WHERE id = 1")).first()
    except sa_exc.DBAPIError:
        return None
    return str(row[0]) if row else None


def downgrade(url: str, revision: str) -> None:
    from alembic import command

    command.downgrade(alembic_config(url), revision)
