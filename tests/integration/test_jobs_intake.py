"""Group commit on the ack path: concurrent submissions share transactions, each caller
returns only once its own job is committed, and one bad submission fails alone."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

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


async def test_concurrent_submissions_share_commits_and_all_land(queue: JobQueue) -> None:
    kind = f"intake-{uuid.uuid4().hex[:8]}"
    intake = JobIntake(queue)
    results = await asyncio.gather(
        *(intake.submit(tenant_id="T", kind=kind, key=f"{kind}:{i}") for i in range(40))
    )
    assert all(created for _, created in results)
    assert len({job_id for job_id, _ in results}) == 40
    assert _count(queue.db, kind) == 40
    # They arrived while no write was in flight: one transaction carried them all.
    assert intake.transactions <= 2


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


def _insert_threads(kind: str) -> tuple[list[int], Any]:
    """The threads that ran an INSERT of this test's jobs, on any engine."""
    threads: list[int] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT") and kind in str(parameters):
            threads.append(threading.get_ident())

    event.listen(Engine, "before_cursor_execute", record)
    return threads, lambda: event.remove(Engine, "before_cursor_execute", record)


async def test_with_sqlites_lock_free_the_insert_is_written_on_the_loop(queue: JobQueue) -> None:
    """No thread hop when nothing would wait (SQLite, lock free); PostgreSQL's round trip
    always goes to a thread."""
    kind = f"intake-{uuid.uuid4().hex[:8]}"
    intake = JobIntake(queue)
    threads, stop = _insert_threads(kind)
    try:
        _, created = await intake.submit(tenant_id="T", kind=kind, key=f"{kind}:1")
    finally:
        stop()
    assert created and _count(queue.db, kind) == 1
    on_loop = threads == [threading.get_ident()]
    assert on_loop == (queue.db.backend == "sqlite")


async def test_a_held_write_lock_never_blocks_the_loop_and_the_job_lands(queue: JobQueue) -> None:
    """The loop's try does not wait for SQLite's lock: the event loop keeps running while
    another process's writer holds it, and the job is written once it is released."""
    if queue.db.backend != "sqlite":
        pytest.skip("SQLite's write lock")
    kind = f"intake-{uuid.uuid4().hex[:8]}"
    intake = JobIntake(queue)
    with WriterHoldingTheLock(queue.db):
        submitted = asyncio.ensure_future(intake.submit(tenant_id="T", kind=kind, key=f"{kind}:1"))
        ticks = 0
        while ticks < 20:  # the loop runs: it is not stuck in the insert
            await asyncio.sleep(0.01)
            ticks += 1
        assert not submitted.done()
    _, created = await asyncio.wait_for(submitted, 30)
    assert created and _count(queue.db, kind) == 1
