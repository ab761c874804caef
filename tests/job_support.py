"""Running jobs in tests.

* `run_due_jobs`: by hand, for tests whose database is one rolled-back connection (`db`)
  and that want to see each step: due jobs run one at a time, through the worker's own code
  for settling them (succeeded, retried, dead), so what a test sees is what a worker records.
* `running_worker`: a job worker beside a TestClient, for tests whose requests wait on jobs
  (a REST turn, an approval's execution). It runs on the app's own event loop, as
  `create_app(background=True)` would, but only with the kinds a test asks for: the app's
  schedules (deliveries, expiries) stay in the test's hands.
* `WriterHoldingTheLock`: another writer holding SQLite's write lock, for what must not
  wait behind it (or must wait it out).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from fastapi.testclient import TestClient
from sqlalchemy import select

from bot.worker import job_kinds
from core.db import Database
from core.db.models import JobRow
from core.jobs import JobKind, JobWorker
from core.wiring import Container


def run_due_jobs(container: Container, *kinds: str) -> int:
    """Run the due jobs of these kinds (all registered kinds by default), and the jobs they
    enqueue, until none is due; returns how many ran."""
    worker = JobWorker(container.jobs, job_kinds(container, None))
    wanted = list(kinds) or list(worker.kinds)

    async def drain() -> int:
        ran = 0
        while claims := container.jobs.claim(worker.name, kinds=wanted, limit=1):
            await worker._run(claims[0])
            ran += 1
        return ran

    return asyncio.run(drain())


def request_kinds(container: Container) -> list[JobKind]:
    """What requests wait on: REST turns and executions of approved outputs (no schedules)."""
    from core.agent.turn_job import job_kinds as turn_kinds
    from core.execution.jobs import job_kinds as execution_kinds

    return turn_kinds(container) + [k for k in execution_kinds(container) if k.every is None]


@contextmanager
def running_worker(
    client: TestClient, container: Container, kinds: Sequence[JobKind] | None = None
) -> Iterator[JobWorker]:
    """Run `kinds` (default: `request_kinds`) until the block ends; running jobs are then
    handed back, as at a worker's shutdown. `client` must be open (`with TestClient`)."""
    worker = JobWorker(
        container.jobs,
        request_kinds(container) if kinds is None else kinds,
        poll=0.05,
        grace=5.0,
        per_key_limit=container.settings.agent_concurrency,
    )
    portal = client.portal
    assert portal is not None, "open the TestClient (`with TestClient(app) as client`) first"
    portal.call(worker.start)
    try:
        yield worker
    finally:
        portal.call(worker.stop)


class WriterHoldingTheLock:
    """Another unit of work holding the database's write lock (SQLite's is database-wide)
    until the block ends."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.holding = threading.Event()
        self.let_go = threading.Event()
        self.released = threading.Event()
        self.thread = threading.Thread(target=self._hold, daemon=True)

    def _hold(self) -> None:
        with self.database.session() as s:
            s.execute(select(JobRow.id).limit(1))  # BEGIN IMMEDIATE has run: the lock is ours
            self.holding.set()
            self.let_go.wait(timeout=20)
        self.released.set()

    def __enter__(self) -> WriterHoldingTheLock:
        self.thread.start()
        assert self.holding.wait(timeout=10)
        return self

    def __exit__(self, *_: object) -> None:
        self.let_go.set()
        self.thread.join(timeout=10)
