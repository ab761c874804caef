"""Group commit on the ack path: concurrent submissions share transactions, each caller
returns only once its own job is committed, and one bad submission fails alone."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, event, func, select

from core.db import Database
from core.db.models import JobRow
from core.jobs import JobQueue
from core.jobs.intake import JobIntake
from tests.job_support import WriterHoldingTheLock


@pytest.fixture
def queue(module_db: Database) -> JobQueue:
    return JobQueue(module_db)


def _count(db: Database, kind: str) -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count()).where(JobRow.kind == kind)) or 0)


async def test_submissions_arriving_during_a_write_share_the_next_commit(queue: JobQueue) -> None:
    """The first submission's insert has to wait (another writer is in the way); the 39
    that arrive meanwhile wait for it, then all go in one transaction."""
    kind = f"intake-{uuid.uuid4().hex[:8]}"
    intake = JobIntake(queue)
    with _writer_in_the_way(queue.db, kind, f"{kind}:0"):
        first = asyncio.ensure_future(intake.submit(tenant_id="T", kind=kind, key=f"{kind}:0"))
        await asyncio.sleep(0.05)
        rest = [
            asyncio.ensure_future(intake.submit(tenant_id="T", kind=kind, key=f"{kind}:{i}"))
            for i in range(1, 40)
        ]
        await asyncio.sleep(0.05)
        assert not first.done() and not any(r.done() for r in rest)
    results = await asyncio.wait_for(asyncio.gather(first, *rest), 30)
    assert all(created for _, created in results)
    assert len({job_id for job_id, _ in results}) == 40
    assert _count(queue.db, kind) == 40
    assert intake.transactions == 2


async def test_a_lone_submission_is_written_at_once(queue: JobQueue) -> None:
    kind = f"intake-{uuid.uuid4().hex[:8]}"
    intake = JobIntake(queue)
    job_id, created = await intake.submit(tenant_id="T", kind=kind, key=f"{kind}:1")
    assert created and intake.transactions == 1
    assert _count(queue.db, kind) == 1
    again = await intake.submit(tenant_id="T", kind=kind, key=f"{kind}:1")
    assert again == (job_id, False)


async def test_duplicates_in_one_batch_make_one_job(queue: JobQueue) -> None:
    kind = f"intake-{uuid.uuid4().hex[:8]}"
    intake = JobIntake(queue)
    results = await asyncio.gather(
        *(intake.submit(tenant_id="T", kind=kind, key=f"{kind}:same") for _ in range(10))
    )
    assert len({job_id for job_id, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert _count(queue.db, kind) == 1


async def test_one_bad_submission_fails_alone(queue: JobQueue) -> None:
    kind = f"intake-{uuid.uuid4().hex[:8]}"
    intake = JobIntake(queue)
    good = [intake.submit(tenant_id="T", kind=kind, key=f"{kind}:{i}") for i in range(5)]
    bad = intake.submit(tenant_id="T", kind=kind, key=f"{kind}:bad", payload={"x": object()})
    results = await asyncio.gather(*good, bad, return_exceptions=True)
    assert all(isinstance(r, tuple) for r in results[:5])
    assert isinstance(results[5], Exception)
    assert _count(queue.db, kind) == 5


def _insert_threads(kind: str) -> tuple[list[tuple[int, asyncio.Task[Any] | None]], Any]:
    """The threads, and the asyncio tasks (None off the loop), that ran an INSERT of this
    test's jobs: on any SQLAlchemy engine, or on psycopg's asyncio connections
    (`Database.prompt_async`)."""
    threads: list[tuple[int, asyncio.Task[Any] | None]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT") and kind in str(parameters):
            try:
                task = asyncio.current_task()
            except RuntimeError:  # a thread without a loop
                task = None
            threads.append((threading.get_ident(), task))

    execute = psycopg.AsyncCursor.execute

    async def recorded(cursor: Any, query: Any, params: Any = None, **kwargs: Any) -> Any:
        record(None, None, str(query), [str(p) for p in params or ()])
        return await execute(cursor, query, params, **kwargs)

    def stop() -> None:
        event.remove(Engine, "before_cursor_execute", record)
        setattr(psycopg.AsyncCursor, "execute", execute)  # noqa: B010

    event.listen(Engine, "before_cursor_execute", record)
    setattr(psycopg.AsyncCursor, "execute", recorded)  # noqa: B010
    return threads, stop


async def test_the_insert_is_written_from_the_loop_without_a_thread(queue: JobQueue) -> None:
    """No thread hop: PostgreSQL's round trip is awaited on the loop, and SQLite's write,
    with its lock free, is a tenth of a millisecond of local work done there. A lone
    submission is written by its caller's own task, with no hand-over to a writer task."""
    kind = f"intake-{uuid.uuid4().hex[:8]}"
    intake = JobIntake(queue)
    threads, stop = _insert_threads(kind)
    try:
        _, created = await intake.submit(tenant_id="T", kind=kind, key=f"{kind}:1")
    finally:
        stop()
    assert created and _count(queue.db, kind) == 1
    assert threads == [(threading.get_ident(), asyncio.current_task())]


@contextmanager
def _writer_in_the_way(db: Database, kind: str, key: str) -> Iterator[None]:
    """Another transaction the insert of `key` must wait for: on SQLite one holding the
    database's write lock; on PostgreSQL one that inserted the same key and has not
    committed (a conflicting insert waits for its outcome). The other one rolls back."""
    if db.backend == "sqlite":
        with WriterHoldingTheLock(db):
            yield
        return
    with db.session() as s:
        s.add(JobRow(id=f"job-{uuid.uuid4().hex}", tenant_id="T", kind=kind, key=key))
        s.flush()
        try:
            yield
        finally:
            s.rollback()


async def test_an_insert_that_must_wait_never_blocks_the_loop_and_lands(queue: JobQueue) -> None:
    """Waiting for another writer (SQLite's lock, a PostgreSQL row lock) happens off the
    loop's back: the event loop keeps running, and the job is written once it is free."""
    kind = f"intake-{uuid.uuid4().hex[:8]}"
    key = f"{kind}:1"
    intake = JobIntake(queue)
    with _writer_in_the_way(queue.db, kind, key):
        submitted = asyncio.ensure_future(intake.submit(tenant_id="T", kind=kind, key=key))
        ticks = 0
        while ticks < 20:  # the loop runs: it is not stuck in the insert
            await asyncio.sleep(0.01)
            ticks += 1
        assert not submitted.done()
    _, created = await asyncio.wait_for(submitted, 30)
    assert created and _count(queue.db, kind) == 1
