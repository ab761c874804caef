"""The ack path's insert on PostgreSQL, awaited on the event loop (`Database.prompt_async`):
a terminated connection is replaced (and a keyed insert retried) without a restart, and no
connection outlives its loop or the database's disposal."""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select, text

from core.db import Database
from core.db.database import DATABASE_UNAVAILABLE
from core.db.models import JobRow
from core.jobs import JobQueue
from core.jobs.intake import JobIntake
from tests.conftest import PG_URL

pytestmark = pytest.mark.skipif(not PG_URL, reason="PostgreSQL connections")


@pytest.fixture
def db(migrated_database_url_factory) -> Iterator[Database]:
    database = Database.from_url(migrated_database_url_factory("postgres"))
    yield database
    database.dispose()


async def _loop_pid(db: Database) -> int:
    """The server process of the connection this loop's next insert will use."""
    rows = await db.prompt_async("SELECT pg_backend_pid()", [])
    assert rows is not None
    [(pid,)] = rows
    return int(pid)


def _alive(db: Database, pid: int) -> bool:
    with db.session() as s:
        query = text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid")
        return bool(s.scalar(query, {"pid": pid}))


def _gone(db: Database, pid: int) -> bool:
    """The server process ended (it exits just after its client closes the connection)."""
    deadline = time.monotonic() + 10
    while _alive(db, pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _terminate(db: Database, pid: int) -> None:
    with db.session() as s:
        s.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})


def _jobs(db: Database, kind: str) -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count()).where(JobRow.kind == kind)) or 0)


async def test_a_terminated_connection_is_replaced_and_only_a_keyed_insert_retried(
    db: Database,
) -> None:
    """PostgreSQL restarted, or an admin terminated the ack connection: a keyed insert
    (harmless twice) is retried on a new connection and lands once; a keyless one answers
    "database unavailable" (Slack's retry comes back), and the next one lands."""
    kind = f"loop-{uuid.uuid4().hex[:8]}"
    intake = JobIntake(JobQueue(db))

    _terminate(db, await _loop_pid(db))
    _, created = await intake.submit(tenant_id="T", kind=kind, key=f"{kind}:1")
    assert created and _jobs(db, kind) == 1

    _terminate(db, await _loop_pid(db))
    with pytest.raises(DATABASE_UNAVAILABLE):
        await intake.submit(tenant_id="T", kind=kind)
    assert _jobs(db, kind) == 1
    _, created = await intake.submit(tenant_id="T", kind=kind)
    assert created and _jobs(db, kind) == 2


def test_a_loops_connections_close_when_the_loop_goes_away(db: Database) -> None:
    """Tests (and anything else) may run many loops in one process: each loop's idle
    connections are closed once the loop is gone, not left open on the server."""
    pid = asyncio.run(_loop_pid(db))
    gc.collect()
    assert _gone(db, pid)


async def test_disposing_the_database_closes_the_loops_connections(
    migrated_database_url_factory,
) -> None:
    db = Database.from_url(migrated_database_url_factory("postgres"))
    pid = await _loop_pid(db)
    watcher = Database.from_url(db.engine.url.render_as_string(hide_password=False))
    try:
        assert _alive(watcher, pid)
        db.dispose()
        assert _gone(watcher, pid)
        with pytest.raises(DATABASE_UNAVAILABLE):
            await db.prompt_async("SELECT 1", [])
    finally:
        watcher.dispose()


async def test_sqlite_has_no_loop_connection(module_db: Database) -> None:
    """SQLite's write is local work (`prompt_now`); nothing is awaited there."""
    if module_db.backend != "sqlite":
        pytest.skip("SQLite")
    assert await module_db.prompt_async("SELECT 1", []) is None
