"""Group commit on the ack path: concurrent submissions share transactions, each caller
returns only once its own job is committed, and one bad submission fails alone."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import func, select

from core.db import Database
from core.db.models import JobRow
from core.jobs import JobQueue
from core.jobs.intake import JobIntake


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
