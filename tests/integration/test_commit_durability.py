"""Which commits wait for PostgreSQL's WAL flush: every one by default; a job's end and a
memory do not (`Database.session(durable=False)`), since losing them in a database crash is
harmless (a job's end is redone as if its worker had died; a memory is derived data)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Engine, event, select, text

from core.db import Database
from core.db.models import JobRow
from core.jobs import JobQueue
from core.memory.local import LocalMemory
from core.memory.port import MemoryMessage
from tests.conftest import PG_URL

pytestmark = pytest.mark.skipif(not PG_URL, reason="PostgreSQL's synchronous_commit")


@pytest.fixture
def db(module_db: Database) -> Database:
    if module_db.backend != "postgresql":
        pytest.skip("PostgreSQL's synchronous_commit")
    return module_db


def _setting(s: Any) -> str:
    return str(s.execute(text("SHOW synchronous_commit")).scalar())


def test_a_session_waits_for_the_flush_unless_told_not_to_and_only_for_itself(
    db: Database,
) -> None:
    with db.session() as s:
        assert _setting(s) == "on"
    with db.session(durable=False) as s:
        assert _setting(s) == "off"
    # SET LOCAL: the pooled connection's next transaction waits for its flush again.
    with db.session() as s:
        assert _setting(s) == "on"


@contextmanager
def _commits() -> Iterator[list[tuple[str, list[str]]]]:
    """(synchronous_commit as the transaction committed, its statements) per commit."""
    seen: list[tuple[str, list[str]]] = []

    def executed(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        conn.info.setdefault("test_statements", []).append(statement)

    def committing(conn: Any) -> None:
        statements = conn.info.pop("test_statements", [])
        if any(s.lstrip().upper().startswith(("INSERT", "UPDATE")) for s in statements):
            cursor = conn.connection.dbapi_connection.cursor()
            cursor.execute("SHOW synchronous_commit")
            seen.append((cursor.fetchone()[0], statements))

    event.listen(Engine, "before_cursor_execute", executed)
    event.listen(Engine, "commit", committing)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", executed)
        event.remove(Engine, "commit", committing)


def _writes(commits: list[tuple[str, list[str]]], table: str) -> list[str]:
    return [
        setting
        for setting, statements in commits
        if any(f"INSERT INTO {table}" in s or f"UPDATE {table}" in s for s in statements)
    ]


def test_claims_wait_for_the_flush_and_a_jobs_end_does_not(db: Database) -> None:
    """A claim fences every later write (its attempt number), so it must survive a crash; a
    finished job's end, lost, is a worker that died before writing it: redone."""
    queue = JobQueue(db)
    kind = f"durable-{uuid.uuid4().hex[:8]}"
    queue.submit(tenant_id="T", kind=kind)
    with _commits() as commits:
        [claim] = queue.claim("w1", kinds=[kind], limit=1)
        claimed = list(commits)
        assert queue.finish(claim, {"ok": True})
    assert _writes(claimed, "jobs") == ["on"]
    assert _writes(commits, "jobs") == ["on", "off"]
    assert queue.get("T", claim.id).state == "succeeded"


def test_progress_waits_for_the_flush_unless_the_next_attempt_copes_without_it(
    db: Database,
) -> None:
    """An execution's `calling` mark must survive a crash (it keeps a second attempt from
    calling the target again); a placeholder's ts need not (the next attempt finds the
    message in the thread)."""
    queue = JobQueue(db)
    kind = f"durable-{uuid.uuid4().hex[:8]}"
    queue.submit(tenant_id="T", kind=kind)
    [claim] = queue.claim("w1", kinds=[kind], limit=1)
    with _commits() as commits:
        assert queue.progress(claim, {"calling": True})
        assert queue.progress(claim, {"placeholder_ts": "1.0001"}, durable=False)
    assert _writes(commits, "jobs") == ["on", "off"]
    with db.session() as s:
        progress = s.scalar(select(JobRow.progress).where(JobRow.id == claim.id))
    assert progress == {"calling": True, "placeholder_ts": "1.0001"}


def test_a_memory_does_not_wait_for_the_flush(db: Database) -> None:
    memory = LocalMemory(db, None)  # lexical: the write is what is looked at here
    user = f"U{uuid.uuid4().hex[:8]}"
    with _commits() as commits:
        memory.add("T", [MemoryMessage("user", "I prefer email")], user_id=user, agent_id="A1")
    assert _writes(commits, "memories") == ["off"]
    assert [m.text for m in memory.list("T", user_id=user)] == ["I prefer email"]
